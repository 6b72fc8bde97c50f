"""CPU stand-ins for the CUDA-only pieces of the original TrackOcc, installed at run time.

The original (Tsinghua-MARS-Lab/TrackOcc) needs two things on CPU that it only has for CUDA:

* ``models/ops/bev_pool_v2``: ``bev_pool.py`` does ``from . import bev_pool_v2_ext``, a
  compiled extension whose kernels exist only in CUDA. :func:`install_cpu_ops` registers a
  pure-PyTorch module under that name (``sys.modules``) *before* the original is imported, so
  the original's own ``QuickCumsumCuda`` autograd function runs unchanged and calls
  :func:`bev_pool_v2_forward` / :func:`bev_pool_v2_backward` below. They follow the CUDA
  kernels' contract: arguments in the same order (``interval_lengths`` before
  ``interval_starts``), ``out`` (B, Z, Y, X, C) channel-last written in place, each interval's
  points summed into voxel ``ranks_bev[interval_start]``.
* ``models/detectors/trackocc.py``: ``gen_dx_bx`` defaults to ``device='cuda'`` and the
  detector calls it without a device; :func:`patch_original_for_cpu` swaps in a CPU default.

Multi-scale deformable attention needs nothing: the original falls back to mmcv's
``multi_scale_deformable_attn_pytorch`` when the value is not a CUDA tensor, and its 3D variant
is pure PyTorch.

This module imports only torch, so trackocc's own test environment can test it too.
"""
import sys
import types

import torch

#: module name the original imports its compiled extension under
EXT_MODULE = 'models.ops.bev_pool_v2.bev_pool_v2_ext'


def _points_of_intervals(interval_starts, interval_lengths):
    """Indices of all points covered by the intervals, and the interval of each."""
    starts = interval_starts.long()
    lengths = interval_lengths.long()
    seg = torch.repeat_interleave(torch.arange(starts.numel()), lengths)
    first = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    points = starts[seg] + torch.arange(seg.numel()) - first
    return points, seg


def _check(name, depth, feat, tensors):
    if depth.dtype != torch.float32 or feat.dtype != torch.float32:
        raise TypeError(f'{name}: depth and feat must be float32 (the CUDA kernel reads float*), '
                        f'got {depth.dtype} and {feat.dtype}')
    for key, t in tensors.items():
        if t.dtype != torch.int32 or t.dim() != 1:
            raise TypeError(f'{name}: {key} must be a 1-D int32 tensor, got {t.dtype} '
                            f'{tuple(t.shape)}')


def bev_pool_v2_forward(depth, feat, out, ranks_depth, ranks_feat, ranks_bev,
                        interval_lengths, interval_starts):
    """Voxel pooling forward, in place into ``out``.

    Args:
        depth: (B, N, D, h, w) float32 depth probabilities.
        feat: (B, N, h, w, C) float32 context features.
        out: (B, Z, Y, X, C) float32 output, zero-initialised by the caller.
        ranks_depth, ranks_feat, ranks_bev: (P,) int32 indices into the flattened depth,
            feature pixels and output voxels, sorted by ``ranks_bev``.
        interval_lengths, interval_starts: (n_intervals,) int32 runs of equal ``ranks_bev``.
    """
    _check('bev_pool_v2_forward', depth, feat, dict(
        ranks_depth=ranks_depth, ranks_feat=ranks_feat, ranks_bev=ranks_bev,
        interval_lengths=interval_lengths, interval_starts=interval_starts))
    C = feat.shape[-1]
    if out.shape[-1] != C or not out.is_contiguous():
        raise ValueError(f'bev_pool_v2_forward: out must be contiguous (B, Z, Y, X, {C}), got '
                         f'{tuple(out.shape)}')
    points, seg = _points_of_intervals(interval_starts, interval_lengths)
    target = ranks_bev.long()[interval_starts.long()]
    d = depth.reshape(-1)[ranks_depth.long()[points]]
    f = feat.reshape(-1, C)[ranks_feat.long()[points]]
    sums = torch.zeros(target.numel(), C, dtype=out.dtype)
    sums.index_add_(0, seg, d.unsqueeze(1) * f)
    out.view(-1, C)[target] = sums  # the kernel assigns (one interval per voxel)


def bev_pool_v2_backward(out_grad, depth_grad, feat_grad, depth, feat, ranks_depth, ranks_feat,
                         ranks_bev, interval_lengths, interval_starts):
    """Voxel pooling backward, in place into ``depth_grad`` and ``feat_grad``.

    The caller (the original's ``QuickCumsumCuda.backward``) sorts the points by
    ``ranks_feat`` and passes runs of equal ``ranks_feat`` as the intervals.

    Args:
        out_grad: (B, Z, Y, X, C) gradient of the channel-last output.
        depth_grad: (B, N, D, h, w) zeros, receives the depth gradient.
        feat_grad: (B, N, h, w, C) zeros, receives the feature gradient.
        depth, feat, ranks_*: as in :func:`bev_pool_v2_forward` (ranks in ``ranks_feat`` order).
        interval_lengths, interval_starts: runs of equal ``ranks_feat``.
    """
    _check('bev_pool_v2_backward', depth, feat, dict(
        ranks_depth=ranks_depth, ranks_feat=ranks_feat, ranks_bev=ranks_bev,
        interval_lengths=interval_lengths, interval_starts=interval_starts))
    C = feat.shape[-1]
    points, seg = _points_of_intervals(interval_starts, interval_lengths)
    g = out_grad.reshape(-1, C)[ranks_bev.long()[points]]  # (p, C)
    f = feat.reshape(-1, C)[ranks_feat.long()[points]]
    d = depth.reshape(-1)[ranks_depth.long()[points]]
    # depth: one value per point (the kernel assigns)
    depth_grad.view(-1)[ranks_depth.long()[points]] = (g * f).sum(-1)
    # feat: summed over the points of an interval, into its first point's feature pixel
    sums = torch.zeros(interval_starts.numel(), C, dtype=feat_grad.dtype)
    sums.index_add_(0, seg, g * d.unsqueeze(1))
    feat_grad.view(-1, C)[ranks_feat.long()[interval_starts.long()]] = sums


def make_ext_module():
    """A module object standing for the original's compiled ``bev_pool_v2_ext``."""
    mod = types.ModuleType(EXT_MODULE)
    mod.__doc__ = 'CPU (pure PyTorch) stand-in for bev_pool_v2_ext, from tools/parity/ref_ops.py'
    mod.bev_pool_v2_forward = bev_pool_v2_forward
    mod.bev_pool_v2_backward = bev_pool_v2_backward
    return mod


def install_cpu_ops():
    """Register the CPU ``bev_pool_v2_ext`` before the original's ``models`` is imported.

    Raises:
        RuntimeError: if the original's bev_pool module was already imported (its
            ``from . import bev_pool_v2_ext`` has then run, with or without this module).
    """
    if 'models.ops.bev_pool_v2.bev_pool' in sys.modules and \
            not getattr(sys.modules.get(EXT_MODULE), '_parity_cpu', False):
        raise RuntimeError('install_cpu_ops() must run before the original\'s models package '
                           'is imported')
    mod = make_ext_module()
    mod._parity_cpu = True
    sys.modules[EXT_MODULE] = mod
    return mod


def _gen_dx_bx_cpu(xbound, ybound, zbound, device='cpu'):
    """The original's ``gen_dx_bx`` with a CPU default device (voxel size, first centre, count)."""
    rows = (xbound, ybound, zbound)
    dx = torch.tensor([r[2] for r in rows], dtype=torch.float32, device=device)
    bx = torch.tensor([r[0] + r[2] / 2.0 for r in rows], dtype=torch.float32, device=device)
    nx = torch.tensor([(r[1] - r[0]) / r[2] for r in rows], dtype=torch.float32, device=device)
    return dx, bx, nx


def patch_original_for_cpu():
    """Patch the imported original for CPU; returns the names patched."""
    det = sys.modules.get('models.detectors.trackocc')
    if det is None:
        raise RuntimeError('import the original\'s models package before patching it')
    det.gen_dx_bx = _gen_dx_bx_cpu
    return ['models.detectors.trackocc.gen_dx_bx']
