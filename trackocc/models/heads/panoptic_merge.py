"""Panoptic merge at inference: thing (track) and stuff mask predictions -> one voxel grid of
semantics and instance ids."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from trackocc.ops.panoptic_merge import (MaskBlocks, acc_dtype, mask_blocks,
                                         panoptic_merge_stats)


@torch.no_grad()
def merge_panoptic(cls_logits: Tensor,
                   mask_logits: MaskBlocks,
                   segment_ids: Tensor,
                   free_class: int,
                   score_thresh: float = 0.3,
                   overlap_thresh: float = 0.7,
                   valid: Optional[Tensor] = None,
                   impl: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Merge mask predictions into per-voxel semantics and instance ids (Mask2Former
    panoptic inference, as the reference does it).

    Predictions whose best class is ``free_class`` or whose best probability is not above
    ``score_thresh`` (or that ``valid`` excludes) are dropped. Every voxel goes to the kept
    prediction maximizing ``score * mask_prob`` (the first one on ties); a prediction keeps
    the voxels it wins where its own mask probability is >= 0.5, and only if the voxels it
    wins (any mask probability) are at least ``overlap_thresh`` of its own mask (probability
    >= 0.5). Kept voxels take the prediction's class and segment id; the others stay
    ``free_class`` with id 0.

    Runs without host-device synchronisation: every prediction is scored over all voxels
    (fixed shapes) and dropped ones can never win a voxel. The pass over the (P, N) masks is
    :func:`trackocc.ops.panoptic_merge_stats` (one fused kernel on CUDA); probabilities and
    ``score * prob`` are computed in float32 (float64 for float64 mask logits), also for
    fp16/bf16 logits.

    Args:
        cls_logits (Tensor): (P, C) class logits (sigmoid).
        mask_logits (Tensor | Sequence[Tensor]): (P, N) voxel mask logits, or row blocks
            (P_b, N) of one dtype whose rows, in order, are the P predictions (e.g. thing and
            stuff queries, without concatenating them).
        segment_ids (Tensor): (P,) instance id written for each prediction (0 = none,
            e.g. stuff queries; tracks use their track id + 1).
        free_class (int): class of empty voxels (C - 1).
        score_thresh (float): class score threshold (0.3).
        overlap_thresh (float): kept-area ratio threshold (0.7).
        valid (Tensor, optional): (P,) bool, predictions that may be kept (default all);
            the result equals merging only the valid rows.
        impl (str, optional): implementation of the statistics pass (None: the compiled
            kernel on CUDA, the PyTorch reference on CPU; 'ext' / 'pytorch' force one).

    Returns:
        semantics (N,) int32, instances (N,) int32.
    """
    blocks = mask_blocks(mask_logits)
    num_preds = sum(b.shape[0] for b in blocks)
    num_voxels = blocks[0].shape[-1]
    if cls_logits.shape[0] != num_preds or len(segment_ids) != num_preds or \
            (valid is not None and len(valid) != num_preds):
        raise ValueError(f'merge_panoptic: {cls_logits.shape[0]} class rows, {num_preds} masks'
                         f', {len(segment_ids)} ids'
                         + ('' if valid is None else f' and {len(valid)} valid flags')
                         + ' differ')
    device = blocks[0].device
    if num_preds == 0:
        return (torch.full((num_voxels, ), free_class, dtype=torch.int32, device=device),
                torch.zeros(num_voxels, dtype=torch.int32, device=device))
    scores, labels = cls_logits.to(acc_dtype(cls_logits.dtype)).sigmoid().max(-1)  # (P,)
    keep = (labels != free_class) & (scores > score_thresh)
    if valid is not None:
        keep = keep & valid.to(device=device, dtype=torch.bool)
    stats = panoptic_merge_stats(blocks, scores, keep, impl=impl)
    winner, won_area, own_area = stats.winner, stats.won_area, stats.own_area
    ratio = won_area.double() / own_area.clamp(min=1).double()
    accepted = keep & (won_area > 0) & (own_area > 0) & (stats.kept_area > 0) & \
        (ratio >= overlap_thresh)  # (P,)
    take = stats.in_own & accepted[winner]  # (N,)
    semantics = torch.where(take, labels.to(torch.int32)[winner],
                            torch.full_like(winner, free_class, dtype=torch.int32))
    instances = torch.where(take, segment_ids.to(device=device, dtype=torch.int32)[winner],
                            torch.zeros_like(winner, dtype=torch.int32))
    return semantics, instances
