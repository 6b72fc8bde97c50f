"""Panoptic merge statistics: the one pass over the (P, N) mask logits that the Mask2Former
panoptic merge needs, as a compiled kernel with a pure-PyTorch reference.

For P predictions (rows of the mask-logit blocks, in order) over N voxels, with
``prob = sigmoid(logit)`` in float32 (float64 for float64 logits):

- ``winner[v]``: the first p maximizing ``keep[p] ? score[p] * prob[p, v] : -1``,
- ``in_own[v]``: ``prob[winner[v], v] >= 0.5``,
- ``own_area[p]``: number of voxels with ``prob[p, v] >= 0.5``,
- ``won_area[p]`` / ``kept_area[p]``: voxels whose winner is p (and that lie in p's own mask).

With ``skip_dropped`` the rows not kept count as empty masks (probability 0): they are not
read, their ``own_area`` is 0, and a voxel that no kept row claims goes to row 0 with
``in_own`` false. The merge's result does not change (a dropped row can never be output);
the pass reads only the kept rows, a few dozen of a 400-query budget.

The reference makes about ten passes over (P, N) float tensors (sigmoid, threshold, product,
argmax, gather, scatters); the kernel reads the logits once in their own dtype (bf16 / fp16
under AMP) and never materialises a (P, N) temporary. The statistics are integer counts and
indices: there is nothing to differentiate (inference only).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from .ext_loader import require_cuda_ext, require_ext

_OP = 'panoptic_merge_stats'


class MergeStats(NamedTuple):
    """Result of :func:`panoptic_merge_stats`."""
    winner: Tensor     # (N,) int64
    in_own: Tensor     # (N,) bool
    own_area: Tensor   # (P,) int64
    won_area: Tensor   # (P,) int64
    kept_area: Tensor  # (P,) int64


MaskBlocks = Union[Tensor, Sequence[Tensor]]


def mask_blocks(mask_logits: MaskBlocks) -> list:
    """``mask_logits`` as a list of (P_b, N) blocks of one floating dtype and device."""
    blocks = [mask_logits] if isinstance(mask_logits, Tensor) else list(mask_logits)
    if not blocks:
        raise ValueError(f'{_OP}: no mask logits given')
    num_voxels = blocks[0].shape[-1]
    for b in blocks:
        if b.dim() != 2 or b.shape[1] != num_voxels:
            raise ValueError(f'{_OP}: mask logit blocks must be (P_b, N) with one N, got '
                             f'{[tuple(x.shape) for x in blocks]}')
        if b.dtype != blocks[0].dtype or b.device != blocks[0].device:
            raise ValueError(f'{_OP}: mask logit blocks differ in dtype or device: '
                             f'{[(x.dtype, str(x.device)) for x in blocks]}')
        if not b.is_floating_point():
            raise ValueError(f'{_OP}: mask logits must be floating point, got {b.dtype}')
    return blocks


def acc_dtype(logits_dtype: torch.dtype) -> torch.dtype:
    """Dtype of the probabilities and scores: float64 for float64 logits, else float32."""
    return torch.float64 if logits_dtype == torch.float64 else torch.float32


def panoptic_merge_stats_pytorch(mask_logits: MaskBlocks, scores: Tensor, keep: Tensor,
                                 skip_dropped: bool = False) -> MergeStats:
    """Reference implementation (fixed shapes, no host synchronisation)."""
    blocks = mask_blocks(mask_logits)
    probs = torch.cat([b.to(acc_dtype(b.dtype)) for b in blocks]).sigmoid()  # (P, N)
    if skip_dropped:  # dropped rows are empty masks
        probs.masked_fill_(~keep[:, None], 0.0)
    own = probs >= 0.5
    # score * prob in place; dropped rows score -1 < 0 <= score * prob and never win; argmax
    # picks the first maximum
    weighted = probs.mul_(scores[:, None].to(probs.dtype)).masked_fill_(~keep[:, None], -1.0)
    winner = weighted.argmax(0)  # (N,)
    del probs, weighted
    in_own = own.gather(0, winner[None])[0]
    won_area = torch.zeros(own.shape[0], dtype=torch.long, device=own.device)
    won_area.scatter_add_(0, winner, torch.ones_like(winner))
    kept_area = torch.zeros_like(won_area).scatter_add_(0, winner, in_own.long())
    return MergeStats(winner, in_own, own.sum(1), won_area, kept_area)


def panoptic_merge_stats(mask_logits: MaskBlocks, scores: Tensor, keep: Tensor, *,
                         skip_dropped: bool = False,
                         impl: Optional[str] = None) -> MergeStats:
    """Winner, own-mask flag and areas of the panoptic merge (see the module docstring).

    Args:
        mask_logits: (P, N) logits, or a sequence of (P_b, N) row blocks of one dtype (e.g.
            thing and stuff queries, not concatenated).
        scores: (P,) class score of each prediction, a probability (>= 0).
        keep: (P,) bool, the predictions that may win voxels.
        skip_dropped: rows not kept are empty masks, not read (see the module docstring).
        impl: None picks the compiled kernel for CUDA tensors and the PyTorch reference
            otherwise; 'pytorch' or 'ext' force one.

    Returns:
        :class:`MergeStats`.
    """
    blocks = mask_blocks(mask_logits)
    num_preds = sum(b.shape[0] for b in blocks)
    if scores.shape != (num_preds, ) or keep.shape != (num_preds, ):
        raise ValueError(f'{_OP}: {num_preds} mask rows but scores {tuple(scores.shape)} and '
                         f'keep {tuple(keep.shape)}')
    device = blocks[0].device
    if impl is None:
        impl = 'ext' if device.type == 'cuda' else 'pytorch'
    if impl == 'pytorch':
        return panoptic_merge_stats_pytorch(blocks, scores, keep, skip_dropped)
    if impl != 'ext':
        raise ValueError(f"{_OP}: impl must be None, 'pytorch' or 'ext', got {impl!r}")
    ext = (require_cuda_ext if device.type == 'cuda' else require_ext)(_OP, _OP)
    acc = acc_dtype(blocks[0].dtype)
    return MergeStats(*ext.panoptic_merge_stats(
        [b.contiguous() for b in blocks],
        scores.to(device=device, dtype=acc).contiguous(),
        keep.to(device=device, dtype=torch.bool).contiguous(), skip_dropped))
