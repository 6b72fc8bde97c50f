"""Panoptic merge at inference: thing (track) and stuff mask predictions -> one voxel grid of
semantics and instance ids."""
from typing import Tuple

import torch
from torch import Tensor


@torch.no_grad()
def merge_panoptic(cls_logits: Tensor,
                   mask_logits: Tensor,
                   segment_ids: Tensor,
                   free_class: int,
                   score_thresh: float = 0.3,
                   overlap_thresh: float = 0.7) -> Tuple[Tensor, Tensor]:
    """Merge mask predictions into per-voxel semantics and instance ids (Mask2Former
    panoptic inference, as the reference does it).

    Predictions whose best class is ``free_class`` or whose best probability is not above
    ``score_thresh`` are dropped. Every voxel goes to the prediction maximizing
    ``score * mask_prob``; a prediction keeps the voxels it wins where its own mask
    probability is >= 0.5, and only if the voxels it wins (any mask probability) are at
    least ``overlap_thresh`` of its own mask (probability >= 0.5). Kept voxels take the
    prediction's class and segment id; the others stay ``free_class`` with id 0.

    Args:
        cls_logits (Tensor): (P, C) class logits (sigmoid).
        mask_logits (Tensor): (P, N) voxel mask logits.
        segment_ids (Tensor): (P,) instance id written for each prediction (0 = none,
            e.g. stuff queries; tracks use their track id + 1).
        free_class (int): class of empty voxels (C - 1).
        score_thresh (float): class score threshold (0.3).
        overlap_thresh (float): kept-area ratio threshold (0.7).

    Returns:
        semantics (N,) int32, instances (N,) int32.
    """
    if cls_logits.shape[0] != mask_logits.shape[0] or cls_logits.shape[0] != len(segment_ids):
        raise ValueError(f'merge_panoptic: {cls_logits.shape[0]} class rows, '
                         f'{mask_logits.shape[0]} masks and {len(segment_ids)} ids differ')
    num_voxels = mask_logits.shape[1]
    device = mask_logits.device
    semantics = torch.full((num_voxels, ), free_class, dtype=torch.int32, device=device)
    instances = torch.zeros(num_voxels, dtype=torch.int32, device=device)
    scores, labels = cls_logits.sigmoid().max(-1)
    keep = (labels != free_class) & (scores > score_thresh)
    if not keep.any():
        return semantics, instances
    scores, labels, ids = scores[keep], labels[keep], segment_ids[keep].to(device)
    probs = mask_logits[keep].sigmoid()

    winner = (scores[:, None] * probs).argmax(0)  # (N,)
    own = probs >= 0.5  # (K, N)
    won_area = torch.bincount(winner, minlength=len(scores))
    own_area = own.sum(1)
    in_own = own.gather(0, winner[None])[0]  # winner's own mask covers the voxel
    kept_area = torch.bincount(winner[in_own], minlength=len(scores))
    ratio = won_area.double() / own_area.clamp(min=1).double()
    valid = (won_area > 0) & (own_area > 0) & (kept_area > 0) & (ratio >= overlap_thresh)
    take = in_own & valid[winner]
    semantics[take] = labels[winner[take]].to(torch.int32)
    instances[take] = ids[winner[take]].to(torch.int32)
    return semantics, instances
