"""Batch norms that keep the frames of a clip apart while the frames run as one batch.

In training, TrackOcc runs a clip's frames one after another through its feature networks, so
every batch norm in training mode normalises a frame's B samples with that frame's own batch
statistics and then updates its running statistics, once per frame. The T frames can run as
one batch of T*B samples (T times fewer kernel launches, larger kernels) with the same
results when each batch norm normalises each frame's group of B samples on its own:
:func:`frame_grouped_batch_norm`.

How: the (T*B, C, ...) input, frame-major, is seen as (B, T*C, ...) (a view for B = 1, a copy
otherwise), so one batch norm over T*C channels, with the weight and bias repeated T times,
computes every frame's statistics in one kernel; its running statistics go to temporary
buffers with momentum 1 (the frames' batch statistics), which then update the layer's running
statistics as T calls in frame order would: ``r <- (1-m)^T r + sum_t m (1-m)^(T-1-t) s_t``,
in multi-tensor ops over all the layers of a call. Synchronised layers
(:class:`HostSyncFreeSyncBatchNorm` in a distributed run) pool each frame's statistics over
the ranks the same way.

:func:`frame_grouped_batch_norms` installs this on the training-mode batch norms of modules
for the duration of a call; :func:`frame_groupable` says whether every one of them can be.
"""
import contextlib
from typing import Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from trackocc.utils.sync_batch_norm import HostSyncFreeSyncBatchNorm, host_sync_free_batch_norm


def _is_batch_norm(module: nn.Module) -> bool:
    """A batch norm of any kind (torch's, trackocc's, or one only named so, e.g. mmcv's
    ``SyncBatchNorm``)."""
    return isinstance(module, _BatchNorm) or 'BatchNorm' in type(module).__name__


def _training_batch_norms(modules: Iterable[nn.Module]) -> List[nn.Module]:
    return [layer for module in modules for layer in module.modules()
            if _is_batch_norm(layer) and layer.training]


def frame_groupable(modules: Iterable[nn.Module]) -> bool:
    """Whether every batch norm in training mode under ``modules`` can normalise frame by
    frame inside one batch: a ``_BatchNorm`` (not ``torch.nn.SyncBatchNorm``, whose
    distributed forward is torch's own; :class:`HostSyncFreeSyncBatchNorm` is fine) with a
    fixed momentum (a cumulative average, ``momentum=None``, counts calls on the device)."""
    return all(isinstance(layer, _BatchNorm) and not isinstance(layer, nn.SyncBatchNorm)
               and layer.momentum is not None
               for layer in _training_batch_norms(modules))


def _to_groups(x: Tensor, groups: int) -> Tensor:
    """(G*B, C, ...) frame-major -> (B, G*C, ...)."""
    batch = x.shape[0] // groups
    if batch == 1:
        return x.reshape(1, -1, *x.shape[2:])
    return x.reshape(groups, batch, *x.shape[1:]).transpose(0, 1).reshape(
        batch, -1, *x.shape[2:])


def _from_groups(y: Tensor, groups: int, channels: int) -> Tensor:
    """(B, G*C, ...) -> (G*B, C, ...) frame-major.

    At B = 1 the result shares ``y``'s memory but is not a view in autograd's eyes
    (``_unsafe_view``, as torch's own matmul returns its reshaped products): the in-place
    activation that follows a batch norm (``ReLU(inplace=True)``, a residual ``+=``) would
    otherwise rewrite ``y``'s history as a ``CopySlices``, a clone and a copy of the whole
    gradient in the backward pass. Nothing else holds ``y``: the batch norm's backward keeps
    its input, not its output."""
    batch = y.shape[0]
    if batch == 1:
        return torch.ops.aten._unsafe_view(y, (groups, channels, *y.shape[2:]))
    return y.reshape(batch, groups, channels, *y.shape[2:]).transpose(0, 1).reshape(
        groups * batch, channels, *y.shape[2:])


def frame_grouped_batch_norm(bn: _BatchNorm, x: Tensor, groups: int,
                             pending: Optional[List[Tuple[_BatchNorm, Tensor]]] = None) -> Tensor:
    """``bn`` (training mode) applied to each of the ``groups`` frames of ``x`` separately,
    in one call.

    Args:
        bn: a batch norm for which :func:`frame_groupable` holds.
        x (Tensor): (G*B, C, ...), the G frames' B samples frame-major (frame t: rows
            t*B .. t*B+B-1).
        groups (int): G.
        pending (list, optional): where to leave ``(bn, frame statistics)`` for
            :func:`update_running_stats` instead of updating ``bn``'s running statistics now
            (one multi-tensor update for many layers).

    Returns:
        Tensor: (G*B, C, ...): what G calls of ``bn`` on the frames, in order, return,
        concatenated; ``bn``'s running statistics and ``num_batches_tracked`` end as after
        those calls (up to float rounding).
    """
    if x.dim() < 2 or x.shape[0] % groups:
        raise ValueError(f'frame_grouped_batch_norm: input {tuple(x.shape)} is not '
                         f'{groups} frames of equal batches (G*B, C, ...)')
    channels = x.shape[1]
    grouped = _to_groups(x, groups)
    weight = None if bn.weight is None else bn.weight.repeat(groups)
    bias = None if bn.bias is None else bn.bias.repeat(groups)
    stats = (None, None)
    if bn.track_running_stats:  # the frames' batch statistics (momentum 1): (2, G*C)
        stats = torch.zeros((2, groups * channels), dtype=bn.running_mean.dtype,
                            device=x.device)
    sync = bn.sync_group() if isinstance(bn, HostSyncFreeSyncBatchNorm) else None
    if sync is not None:
        y = host_sync_free_batch_norm(grouped, weight, bias, *stats, bn.eps, 1.0, *sync)
    else:
        y = F.batch_norm(grouped, *stats, weight, bias, True, 1.0, bn.eps)
    if bn.track_running_stats:
        if pending is None:
            update_running_stats([(bn, stats)], groups)
        else:
            pending.append((bn, stats))
    return _from_groups(y, groups, channels)


@torch.no_grad()
def update_running_stats(pending: List[Tuple[_BatchNorm, Tensor]], groups: int) -> None:
    """Update each layer's running mean and variance from its ``groups`` frames' statistics
    ((2, G*C): means, unbiased variances) as G batch norm calls in frame order would:
    ``r <- (1-m)^G r + sum_t m (1-m)^(G-1-t) s_t``, and count G calls; multi-tensor ops over
    the layers of one momentum, dtype and device."""
    by_kind = {}
    for bn, stats in pending:
        key = (bn.momentum, bn.running_mean.dtype, bn.running_mean.device)
        by_kind.setdefault(key, []).append((bn, stats))
    for (momentum, _, _), layers in by_kind.items():
        running = [r for bn, _ in layers for r in (bn.running_mean, bn.running_var)]
        frames = [s.view(groups, -1) for _, stats in layers for s in stats]
        keep = 1.0 - momentum
        torch._foreach_mul_(running, keep ** groups)
        for t in range(groups):
            torch._foreach_add_(running, [f[t] for f in frames],
                                alpha=momentum * keep ** (groups - 1 - t))
        torch._foreach_add_([bn.num_batches_tracked for bn, _ in layers], groups)


class _GroupedForward:
    """A training-mode batch norm's forward while its frames are grouped: one object per
    layer, made once and kept on the layer, so that ``torch.compile`` (whose guards hold the
    layer's ``forward`` by identity) sees the same forward at every call of
    :func:`frame_grouped_batch_norms` and does not compile the module again each iteration.
    The call's frame count is ``groups`` (an int: the same value passes the guards again) and
    the frame statistics it leaves go to ``pending``, a list it keeps and the block empties.
    """

    def __init__(self, layer: _BatchNorm) -> None:
        self.layer = layer
        self.groups = 1
        self.pending: List[Tuple[_BatchNorm, Tensor]] = []

    def __call__(self, x: Tensor) -> Tensor:
        return frame_grouped_batch_norm(self.layer, x, self.groups, pending=self.pending)


def _grouped_forward(layer: _BatchNorm) -> _GroupedForward:
    forward = layer.__dict__.get('_frame_grouped_forward')
    if forward is None:
        forward = _GroupedForward(layer)
        layer.__dict__['_frame_grouped_forward'] = forward  # not a sub-module or parameter
    return forward


@contextlib.contextmanager
def frame_grouped_batch_norms(modules: Iterable[nn.Module], groups: int) -> Iterator[None]:
    """Within the block, every batch norm in training mode under ``modules`` runs as
    :func:`frame_grouped_batch_norm` with ``groups`` frames (``ValueError`` unless
    :func:`frame_groupable`); their running statistics are updated when the block ends
    (:func:`update_running_stats`; not when it raises), and their own forward is back.
    Each layer's grouped forward is the same object at every call (:class:`_GroupedForward`),
    so a compiled module around the layers is not compiled again."""
    modules = list(modules)
    if not frame_groupable(modules):
        raise ValueError('frame_grouped_batch_norms: a batch norm in training mode cannot '
                         'be grouped by frame (see frame_groupable)')
    forwards = [_grouped_forward(layer) for layer in _training_batch_norms(modules)]
    try:
        for forward in forwards:  # an instance attribute: nn.Module.__call__ calls it
            forward.groups = groups
            forward.pending.clear()
            forward.layer.forward = forward
        yield
    finally:  # the layers' own forward back; no statistics kept past the block
        for forward in forwards:
            forward.layer.__dict__.pop('forward', None)
        pending = [entry for forward in forwards for entry in forward.pending]
        for forward in forwards:
            forward.pending.clear()
    update_running_stats(pending, groups)
