"""BEVPoolv2 (Lift-Splat voxel pooling, BEVDet semantics) with a pure-PyTorch reference.

Every frustum point ``i`` (one depth bin of one feature pixel) that falls into the grid adds
``depth.flatten()[ranks_depth[i]] * feat.reshape(-1, C)[ranks_feat[i]]`` to voxel
``ranks_bev[i]`` of the output. Points are sorted by ``ranks_bev``; ``interval_starts`` /
``interval_lengths`` delimit the runs of equal ``ranks_bev`` (one run per occupied voxel), and
only points inside an interval are pooled, into voxel ``ranks_bev[interval_start]``; an empty
interval pools nothing.

:func:`voxel_pooling_prepare` builds the ranks and intervals from frustum point coordinates;
:func:`pad_pooling_ranks` pads them to a fixed size (points in no interval, empty intervals),
so that a CUDA graph of the pooling serves every camera rig.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from trackocc.utils.device_constants import device_constant
from .ext_loader import require_cuda_ext, require_ext

_OP = 'bev_pool_v2'


class BEVPoolRanks(NamedTuple):
    """Index vectors of :func:`bev_pool_v2`, all int32 of shape (P,) or (n_intervals,)."""
    ranks_depth: Tensor
    ranks_feat: Tensor
    ranks_bev: Tensor
    interval_starts: Tensor
    interval_lengths: Tensor


def _grid_vector(values, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Grid bounds as a tensor on ``device`` without a host-to-device copy per call (a
    tensor, e.g. a module buffer, is moved; host values become a cached constant)."""
    if isinstance(values, Tensor):
        return values.to(device=device, dtype=dtype)
    return device_constant(values, device, dtype)


def voxel_pooling_prepare(coor: Tensor,
                          grid_lower_bound: Sequence[float],
                          grid_interval: Sequence[float],
                          grid_size: Sequence[int],
                          trunc_toward_zero: bool = False) -> BEVPoolRanks:
    """Compute the ranks and intervals of :func:`bev_pool_v2` from frustum coordinates.

    Args:
        coor: (B, N, D, h, w, 3) ego-frame (x, y, z) metres of every frustum point.
        grid_lower_bound: (x, y, z) of the grid's lower corner in metres.
        grid_interval: (x, y, z) voxel size in metres.
        grid_size: (X, Y, Z) number of voxels.
        trunc_toward_zero: convert metres to voxel indices by truncation as the original
            BEVDet code (``Tensor.long()``), which also keeps points up to one voxel below the
            lower bound in the first voxel; default False uses floor.

    Returns:
        :class:`BEVPoolRanks`; ``ranks_depth`` indexes the flattened depth (B, N, D, h, w),
        ``ranks_feat`` the flattened feature pixels (B, N, h, w), ``ranks_bev`` the flattened
        output voxels (B, Z, Y, X). All vectors are empty when no point falls into the grid.
        One host synchronisation (the counts of points inside and of intervals).
    """
    if coor.dim() != 6 or coor.shape[-1] != 3:
        raise ValueError(f'{_OP}: coor must be (B, N, D, h, w, 3), got {tuple(coor.shape)}')
    B, N, D, H, W, _ = coor.shape
    device = coor.device
    lower = _grid_vector(grid_lower_bound, device, coor.dtype)
    step = _grid_vector(grid_interval, device, coor.dtype)
    size = [int(s) for s in grid_size]
    if len(size) != 3 or lower.numel() != 3 or step.numel() != 3:
        raise ValueError(f'{_OP}: grid bounds, interval and size must have 3 values (x, y, z)')
    X, Y, Z = size

    idx = (coor.reshape(-1, 3) - lower) / step
    idx = idx.trunc() if trunc_toward_zero else idx.floor()
    idx = idx.long()
    num_points = idx.shape[0]
    points = torch.arange(num_points, device=device)
    # a point (b, n, d, y, x) reads feature pixel (b, n, y, x)
    ranks_feat = torch.arange(B * N * H * W, device=device).view(B, N, 1, H, W)
    ranks_feat = ranks_feat.expand(B, N, D, H, W).reshape(-1)
    batch = torch.arange(B, device=device).repeat_interleave(num_points // B)
    inside = ((idx >= 0) & (idx < device_constant(size, device, torch.long))).all(dim=1)
    ranks_bev = ((batch * Z + idx[:, 2]) * Y + idx[:, 1]) * X + idx[:, 0]
    # points outside the grid get the rank past the last voxel: the stable sort puts them
    # after the points inside, which keep their order (no bool-mask indexing)
    outside = B * Z * Y * X
    ranks_bev, order = torch.sort(torch.where(inside, ranks_bev, outside), stable=True)
    new_run = torch.ones_like(ranks_bev, dtype=torch.bool)
    new_run[1:] = ranks_bev[1:] != ranks_bev[:-1]
    new_run &= ranks_bev < outside
    num_inside = inside.sum()
    num_inside_host, num_runs = torch.stack([num_inside, new_run.sum()]).tolist()  # one sync
    if num_runs == 0:
        empty = ranks_bev.new_zeros(0, dtype=torch.int32)
        return BEVPoolRanks(*(empty.clone() for _ in range(5)))
    # the start of run r is written to slot r; other points to the spare last slot
    slots = torch.where(new_run, torch.cumsum(new_run, 0) - 1, num_points)
    starts = points.new_zeros(num_points + 1).scatter_(0, slots, points)[:num_runs]
    lengths = torch.cat([starts[1:], num_inside.view(1)]) - starts
    order = order[:num_inside_host]
    return BEVPoolRanks(order.int(), ranks_feat[order].int(),
                        ranks_bev[:num_inside_host].int(), starts.int(), lengths.int())


def pad_pooling_ranks(ranks: BEVPoolRanks, num_points: int, num_intervals: int,
                      out: Optional[BEVPoolRanks] = None) -> BEVPoolRanks:
    """``ranks`` padded to ``num_points`` points and ``num_intervals`` intervals.

    The padding points read depth and feature element 0 into voxel 0 and lie in no interval;
    the padding intervals are empty (start 0, length 0): neither pools anything, so
    :func:`bev_pool_v2` gives the unpadded result (forward only: the compiled CPU backward
    walks every point, padding included). Fixed sizes make the pooling a CUDA graph that every
    camera rig can replay (``num_points``: all frustum points, the most that can fall inside).

    Args:
        ranks: of :func:`voxel_pooling_prepare`.
        num_points, num_intervals: the padded sizes, at least the given ones.
        out: buffers of those sizes to write into in place (their addresses stay, e.g. the
            inputs of a captured graph); new tensors when None.
    Returns:
        the padded :class:`BEVPoolRanks` (``out`` when given), int32.
    """
    n, m = ranks.ranks_bev.numel(), ranks.interval_starts.numel()
    if n > num_points or m > num_intervals:
        raise ValueError(f'{_OP}: {n} points and {m} intervals do not fit a padding to '
                         f'{num_points} points and {num_intervals} intervals')
    sizes = (num_points,) * 3 + (num_intervals,) * 2
    if out is None:
        out = BEVPoolRanks(*(torch.empty(size, dtype=torch.int32, device=ranks.ranks_bev.device)
                             for size in sizes))
    elif any(tuple(dst.shape) != (size,) or dst.dtype != torch.int32
             for dst, size in zip(out, sizes)):
        raise ValueError(f'{_OP}: pad_pooling_ranks needs int32 out buffers of '
                         f'{num_points} points and {num_intervals} intervals')
    for dst, src in zip(out, ranks):
        dst[:src.numel()].copy_(src)
        dst[src.numel():].zero_()
    return out


def _check_inputs(depth: Tensor, feat: Tensor, ranks_depth: Tensor, ranks_feat: Tensor,
                  ranks_bev: Tensor, bev_feat_shape: Sequence[int], interval_starts: Tensor,
                  interval_lengths: Tensor) -> tuple[int, int, int, int, int]:
    """Shape checks shared by every implementation (no device synchronisation)."""
    if depth.dim() != 5 or feat.dim() != 5:
        raise ValueError(f'{_OP}: depth must be (B, N, D, h, w) and feat (B, N, h, w, C), got '
                         f'{tuple(depth.shape)} and {tuple(feat.shape)}')
    if depth.shape[:2] != feat.shape[:2] or depth.shape[3:] != feat.shape[2:4]:
        raise ValueError(f'{_OP}: depth {tuple(depth.shape)} and feat {tuple(feat.shape)} '
                         f'disagree on (B, N, h, w)')
    if len(bev_feat_shape) != 5 or int(bev_feat_shape[4]) != feat.shape[4]:
        raise ValueError(f'{_OP}: bev_feat_shape must be (B, Z, Y, X, C) with C = '
                         f'{feat.shape[4]}, got {tuple(bev_feat_shape)}')
    n = ranks_depth.numel()
    if ranks_feat.numel() != n or ranks_bev.numel() != n:
        raise ValueError(f'{_OP}: ranks_depth, ranks_feat, ranks_bev must have equal length, got '
                         f'{n}, {ranks_feat.numel()}, {ranks_bev.numel()}')
    if interval_starts.numel() != interval_lengths.numel():
        raise ValueError(f'{_OP}: interval_starts and interval_lengths differ in length')
    for name, t in (('ranks_depth', ranks_depth), ('ranks_feat', ranks_feat),
                    ('ranks_bev', ranks_bev), ('interval_starts', interval_starts),
                    ('interval_lengths', interval_lengths)):
        if t.dtype not in (torch.int32, torch.int64) or t.dim() != 1:
            raise ValueError(f'{_OP}: {name} must be a 1-D integer tensor, got {t.dtype} '
                             f'{tuple(t.shape)}')
        if t.device != depth.device:
            raise ValueError(f'{_OP}: {name} is on {t.device} but depth on {depth.device}')
    B, Z, Y, X, C = (int(s) for s in bev_feat_shape)
    return B, Z, Y, X, C


def bev_pool_v2_pytorch(depth: Tensor, feat: Tensor, ranks_depth: Tensor, ranks_feat: Tensor,
                        ranks_bev: Tensor, bev_feat_shape: Sequence[int],
                        interval_starts: Tensor, interval_lengths: Tensor) -> Tensor:
    """Pure-PyTorch reference of :func:`bev_pool_v2`, differentiable by autograd.

    The intervals are expanded into their points with fixed-size tensor ops (one slot per
    entry of ``ranks_bev``: a cumulative sum of the interval starts finds each slot's
    interval) rather than ``repeat_interleave`` with data-dependent repeats, so the function
    also traces into a loop-free ONNX graph (``trackocc.deployment``).

    Returns:
        (B, C, Z, Y, X) pooled features, dtype ``torch.result_type(depth, feat)``.
    """
    B, Z, Y, X, C = _check_inputs(depth, feat, ranks_depth, ranks_feat, ranks_bev,
                                  bev_feat_shape, interval_starts, interval_lengths)
    dtype = torch.result_type(depth, feat)
    out = torch.zeros(B * Z * Y * X, C, dtype=dtype, device=depth.device)
    starts, lengths = interval_starts.long(), interval_lengths.long()
    num_slots = ranks_bev.shape[0]
    if starts.numel() == 0 or num_slots == 0:  # nothing pooled (gradients are zeros)
        none = starts.new_zeros(0)
        out = out.index_add(0, none, depth.reshape(-1)[none, None].to(dtype) *
                            feat.reshape(-1, C)[none].to(dtype))
        return out.view(B, Z, Y, X, C).permute(0, 4, 1, 2, 3).contiguous()
    total = lengths.sum()
    if not torch.jit.is_tracing() and not depth.is_cuda and int(total) > num_slots:
        raise ValueError(f'{_OP}: the intervals hold {int(total)} points, ranks only '
                         f'{num_slots}')
    # slot j of the expanded point list lies in interval seg[j] (the last one whose offset
    # in the list is <= j; empty intervals share their successor's offset)
    offsets = torch.cumsum(lengths, 0) - lengths
    slot = torch.arange(num_slots, device=depth.device)
    marks = torch.zeros(num_slots + 1, dtype=torch.long, device=depth.device).index_add(
        0, offsets.clamp(max=num_slots), torch.ones_like(offsets))
    seg = (torch.cumsum(marks[:num_slots], 0) - 1).clamp(min=0)
    used = slot < total  # slots past the intervals' points pool nothing
    points = torch.where(used, starts[seg] + slot - offsets[seg], torch.zeros_like(slot))
    target = ranks_bev.long()[starts][seg]
    d = depth.reshape(-1)[ranks_depth.long()[points]].to(dtype) * used.to(dtype)
    f = feat.reshape(-1, C)[ranks_feat.long()[points]].to(dtype)
    out = out.index_add(0, target, d.unsqueeze(1) * f)
    return out.view(B, Z, Y, X, C).permute(0, 4, 1, 2, 3).contiguous()


class BEVPoolV2Function(torch.autograd.Function):
    """Autograd wrapper of the compiled kernels (C++ on CPU, CUDA on GPU).

    The kernels write the channel-first (B, C, Z, Y, X) output directly and read its gradient
    in that layout. The intervals must partition the points (as :func:`voxel_pooling_prepare`
    builds them): the backward gives every point a gradient. On CUDA the feature gradient is
    summed with float atomics (like ``index_add`` in the reference), so its last bits are not
    run-to-run deterministic.
    """

    @staticmethod
    def forward(ctx, depth: Tensor, feat: Tensor, ranks_depth: Tensor, ranks_feat: Tensor,
                ranks_bev: Tensor, bev_feat_shape: Sequence[int], interval_starts: Tensor,
                interval_lengths: Tensor) -> Tensor:
        require = require_cuda_ext if depth.is_cuda else require_ext
        ext = require(_OP, 'bev_pool_v2_forward')
        dtype = torch.result_type(depth, feat)
        depth_c = depth.to(dtype).contiguous()
        feat_c = feat.to(dtype).contiguous()
        ranks = [t.int().contiguous() for t in (ranks_depth, ranks_feat, ranks_bev,
                                                interval_starts, interval_lengths)]
        out = ext.bev_pool_v2_forward(depth_c, feat_c, *ranks,
                                      [int(s) for s in bev_feat_shape])
        ctx.save_for_backward(depth_c, feat_c, *ranks)
        ctx.in_dtypes = (depth.dtype, feat.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        depth, feat, ranks_depth, ranks_feat, ranks_bev, starts, lengths = ctx.saved_tensors
        ext = require_ext(_OP, 'bev_pool_v2_backward')
        # the CPU kernel groups the points by feature pixel (race-free, deterministic); the
        # CUDA kernel walks the intervals, accumulates the feature gradient with atomics and
        # needs no order
        order = None if depth.is_cuda else torch.argsort(ranks_feat, stable=True).int()
        grad_depth, grad_feat = ext.bev_pool_v2_backward(
            grad_out.to(depth.dtype).contiguous(), depth, feat, ranks_depth, ranks_feat,
            ranks_bev, starts, lengths, order)
        grad_depth = grad_depth.to(ctx.in_dtypes[0]) if ctx.needs_input_grad[0] else None
        grad_feat = grad_feat.to(ctx.in_dtypes[1]) if ctx.needs_input_grad[1] else None
        return grad_depth, grad_feat, None, None, None, None, None, None


def bev_pool_v2(depth: Tensor, feat: Tensor, ranks_depth: Tensor, ranks_feat: Tensor,
                ranks_bev: Tensor, bev_feat_shape: Sequence[int], interval_starts: Tensor,
                interval_lengths: Tensor, *, impl: Optional[str] = None) -> Tensor:
    """Pool frustum features into voxels (BEVPoolv2).

    Args:
        depth: (B, N, D, h, w) depth probabilities.
        feat: (B, N, h, w, C) context features.
        ranks_depth, ranks_feat, ranks_bev: (P,) int32 indices into flattened depth,
            feature pixels (B, N, h, w) and voxels (B, Z, Y, X), sorted by ``ranks_bev``.
        bev_feat_shape: (B, Z, Y, X, C) of the pooled volume before the permute.
        interval_starts, interval_lengths: (n_intervals,) int32 runs of equal ``ranks_bev``.
        impl: None picks the CUDA kernel for CUDA tensors and the PyTorch reference on CPU;
            'pytorch' forces the reference, 'ext' the compiled kernel (C++ on CPU).

    Returns:
        (B, C, Z, Y, X) pooled features (zeros where no point falls).
    """
    if impl is None:
        impl = 'ext' if depth.is_cuda else 'pytorch'
    if impl == 'pytorch':
        return bev_pool_v2_pytorch(depth, feat, ranks_depth, ranks_feat, ranks_bev,
                                   bev_feat_shape, interval_starts, interval_lengths)
    if impl != 'ext':
        raise ValueError(f"{_OP}: impl must be None, 'pytorch' or 'ext', got {impl!r}")
    _check_inputs(depth, feat, ranks_depth, ranks_feat, ranks_bev, bev_feat_shape,
                  interval_starts, interval_lengths)
    if depth.is_cuda != feat.is_cuda:
        raise ValueError(f'{_OP}: depth and feat must be on the same device')
    return BEVPoolV2Function.apply(depth, feat, ranks_depth, ranks_feat, ranks_bev,
                                   tuple(int(s) for s in bev_feat_shape), interval_starts,
                                   interval_lengths)
