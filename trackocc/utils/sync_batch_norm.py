"""Synchronised batch norm whose statistics never make the host wait.

``torch.nn.SyncBatchNorm`` gathers every rank's ``(mean, invstd, count)`` and then drops the
ranks with an empty batch by boolean indexing (``count_all[mask]``): a shape that depends on
device values, so every synchronised layer blocks the host until the GPU has caught up with
it and with the slowest rank. A training step of the paper model runs dozens of such layers
per frame, and at batch 1 the step is bound by the host. Here the ranks' statistics are
combined with their counts as weights (an empty rank weighs zero), so nothing leaves the
device; the result is the same (forward, backward and running statistics, ``tests/utils/
test_sync_batch_norm.py``). On CUDA it runs torch's fused SyncBN kernels and backward; on the
CPU (gloo), where ``torch.nn.SyncBatchNorm`` refuses to run, the same in plain tensor ops.

Outside distributed training (or in eval mode) the layer is a plain batch norm.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules._functions import SyncBatchNorm as TorchSyncBatchNormFunction
from torch.nn.modules.batchnorm import _BatchNorm


def _reduce_dims(x: Tensor) -> List[int]:
    """All dimensions of an (N, C, ...) tensor but the channel one."""
    return [0] + list(range(2, x.dim()))


def _per_channel(t: Tensor, x: Tensor) -> Tensor:
    """(C,) -> (1, C, 1, ...) broadcastable against ``x``."""
    return t.view([1, -1] + [1] * (x.dim() - 2))


def _all_gather_rows(row: Tensor, group, world_size: int) -> Tensor:
    """(K,) on every rank -> (world_size, K), rank order; no host synchronisation."""
    if not row.is_cuda:  # gloo (CPU tensors) has no all_gather_into_tensor
        rows = [torch.empty_like(row) for _ in range(world_size)]
        dist.all_gather(rows, row, group=group)
        return torch.stack(rows)
    out = row.new_empty(world_size * row.numel())
    dist.all_gather_into_tensor(out, row, group=group)
    return out.view(world_size, -1)


def combine_rank_stats(counts: Tensor, means: Tensor,
                       variances: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Pool per-rank batch statistics.

    Args:
        counts (Tensor): (W, 1) values per channel on each rank (0 for an empty batch).
        means (Tensor): (W, C) per-rank means (finite; 0 for an empty batch).
        variances (Tensor): (W, C) per-rank biased variances (finite; 0 for an empty batch).

    Returns:
        tuple: the pooled mean (C,), biased variance (C,) and total count (1,), each rank
        weighted by its count, so empty ranks drop out without a data-dependent shape.
    """
    total = counts.sum(0)
    weights = counts / total.clamp(min=1)
    mean = (weights * means).sum(0)
    var = (weights * (variances + (means - mean) ** 2)).sum(0)
    return mean, var, total


class _HostSyncFreeSyncBN(TorchSyncBatchNormFunction):
    """Batch norm over the union of the ranks' batches; forward gathers (count, mean, var),
    backward all-reduces (sum dy, sum dy * (x - mean)), as ``torch.nn.SyncBatchNorm`` does.
    Weight and bias gradients are this rank's own (DDP averages them).

    On CUDA it is torch's SyncBN function with the ranks pooled by :func:`combine_rank_stats`
    instead of the boolean mask: torch's fused kernels (``batch_norm_stats`` /
    ``batch_norm_elemt``) and its backward. Elsewhere (CPU) the same in plain tensor ops,
    which are also the reference of the CUDA path."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                running_mean: Optional[Tensor], running_var: Optional[Tensor], eps: float,
                momentum: Union[float, Tensor], group, world_size: int) -> Tensor:
        ctx.fused = x.is_cuda
        num_channels = x.size(1)
        local_count = x.numel() // num_channels
        if ctx.fused:
            if not (x.is_contiguous(memory_format=torch.channels_last)
                    or x.is_contiguous(memory_format=torch.channels_last_3d)):
                x = x.contiguous()
            weight = weight.contiguous() if weight is not None else None
        xf = None if ctx.fused else x.float()
        if local_count == 0:  # an empty batch still takes part in the collective
            local_mean = local_var = x.new_zeros(num_channels, dtype=torch.float32)
        elif ctx.fused:
            local_mean, local_invstd = torch.batch_norm_stats(x, eps)
            local_var = local_invstd.reciprocal().square() - eps
        else:
            local_var, local_mean = torch.var_mean(xf, dim=_reduce_dims(x), correction=0)
        count = local_mean.new_full((1, ), float(local_count))
        gathered = _all_gather_rows(torch.cat([count, local_mean, local_var]), group,
                                    world_size)
        counts, means, variances = gathered.split([1, num_channels, num_channels], dim=1)
        mean, var, total = combine_rank_stats(counts, means, variances)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * (total / (total - 1).clamp(min=1))
                running_mean.lerp_(mean.to(running_mean.dtype), momentum)
                running_var.lerp_(unbiased.to(running_var.dtype), momentum)
        ctx.process_group = group  # torch's backward (the fused path) reads it too
        if ctx.fused:  # what torch's backward (inherited) reads
            ctx.save_for_backward(x, weight, mean, invstd, counts.to(torch.int32))
            if local_count == 0:
                return torch.empty_like(x)
            return torch.batch_norm_elemt(x, weight, bias, mean, invstd, eps)
        scale = invstd if weight is None else invstd * weight.float()
        shift = -mean * scale if bias is None else bias.float() - mean * scale
        out = (xf * _per_channel(scale, x) + _per_channel(shift, x)).to(x.dtype)
        ctx.save_for_backward(x, weight, mean, invstd, total)
        ctx.has_bias = bias is not None
        ctx.param_dtype = (weight if weight is not None else bias if bias is not None else x).dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if ctx.fused:
            return TorchSyncBatchNormFunction.backward(ctx, grad_out)
        x, weight, mean, invstd, total = ctx.saved_tensors
        dims = _reduce_dims(x)
        dy = grad_out.float()
        xmu = x.float() - _per_channel(mean, x)
        sum_dy = dy.sum(dims)
        sum_dy_xmu = (dy * xmu).sum(dims)
        grad_weight = grad_bias = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (sum_dy_xmu * invstd).to(ctx.param_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = sum_dy.to(ctx.param_dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xmu])
            dist.all_reduce(sums, group=ctx.process_group)
            mean_dy, mean_dy_xmu = (sums / total.clamp(min=1)).chunk(2)
            scale = invstd if weight is None else invstd * weight.float()
            grad_x = ((dy - _per_channel(mean_dy, x)
                       - xmu * _per_channel(invstd * invstd * mean_dy_xmu, x))
                      * _per_channel(scale, x)).to(x.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


class HostSyncFreeSyncBatchNorm(_BatchNorm):
    """Batch norm over the batches of all ranks of ``process_group`` (default: the world),
    pooled on the device (no host wait); the arguments, state dict and results of
    ``torch.nn.SyncBatchNorm``. Outside distributed training, and in eval mode, it is a plain
    batch norm. Not a subclass of ``torch.nn.SyncBatchNorm``: DDP refuses those on the CPU.

    Input: (N, C, ...) with N >= 0 on each rank.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'{type(self).__name__}: expected at least 2D input (N, C, ...), '
                             f'got {input.dim()}D')

    def sync_group(self) -> Optional[Tuple[object, int]]:
        """``(process_group, world_size)`` when this layer synchronises now (training, more
        than one rank), else None (it is a plain batch norm)."""
        group = self.process_group or (dist.group.WORLD if dist.is_available()
                                       and dist.is_initialized() else None)
        world_size = dist.get_world_size(group) if group is not None else 1
        return (group, world_size) if self.training and world_size > 1 else None

    def forward(self, input: Tensor) -> Tensor:
        sync = self.sync_group()
        if sync is None:
            return super().forward(input)  # a plain batch norm: nothing to synchronise
        self._check_input_dim(input)
        if input.size(1) != self.num_features:
            raise ValueError(f'{type(self).__name__}: input has {input.size(1)} channels, '
                             f'the layer {self.num_features}')
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative average, kept on the device
                momentum = 1.0 / self.num_batches_tracked.to(self.running_mean.dtype)
        running = self.track_running_stats
        return host_sync_free_batch_norm(
            input, self.weight, self.bias, self.running_mean if running else None,
            self.running_var if running else None, self.eps, momentum, *sync)


def host_sync_free_batch_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                              running_mean: Optional[Tensor], running_var: Optional[Tensor],
                              eps: float, momentum: Union[float, Tensor], group,
                              world_size: int) -> Tensor:
    """Batch norm of (N, C, ...) ``x`` over the batches of the ``world_size`` ranks of
    ``group`` (autograd function of :class:`HostSyncFreeSyncBatchNorm`); the running
    statistics, if given, are updated in place with ``momentum``."""
    return _HostSyncFreeSyncBN.apply(x, weight, bias, running_mean, running_var, eps, momentum,
                                     group, world_size)


def convert_to_host_sync_free(module: nn.Module) -> nn.Module:
    """Replace every ``torch.nn.SyncBatchNorm`` in ``module`` (in place where it is a child;
    the returned module where ``module`` itself is one) by a :class:`HostSyncFreeSyncBatchNorm`
    that shares its parameters and buffers. Other layers are left as they are."""
    if type(module) is nn.SyncBatchNorm:
        new = HostSyncFreeSyncBatchNorm(module.num_features, module.eps, module.momentum,
                                        module.affine, module.track_running_stats,
                                        module.process_group)
        new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        if hasattr(module, 'qconfig'):
            new.qconfig = module.qconfig
        return new
    for name, child in module.named_children():
        new_child = convert_to_host_sync_free(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
