"""Panoptic merge at inference: thing (track) and stuff mask predictions -> one voxel grid of
semantics and instance ids."""
from typing import Optional, Tuple

import torch
from torch import Tensor


@torch.no_grad()
def merge_panoptic(cls_logits: Tensor,
                   mask_logits: Tensor,
                   segment_ids: Tensor,
                   free_class: int,
                   score_thresh: float = 0.3,
                   overlap_thresh: float = 0.7,
                   valid: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
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
    (fixed shapes) and dropped ones can never win a voxel. Probabilities are computed in
    float32 (or float64 for float64 logits), also for fp16/bf16 logits.

    Args:
        cls_logits (Tensor): (P, C) class logits (sigmoid).
        mask_logits (Tensor): (P, N) voxel mask logits.
        segment_ids (Tensor): (P,) instance id written for each prediction (0 = none,
            e.g. stuff queries; tracks use their track id + 1).
        free_class (int): class of empty voxels (C - 1).
        score_thresh (float): class score threshold (0.3).
        overlap_thresh (float): kept-area ratio threshold (0.7).
        valid (Tensor, optional): (P,) bool, predictions that may be kept (default all);
            the result equals merging only the valid rows.

    Returns:
        semantics (N,) int32, instances (N,) int32.
    """
    num_preds, num_voxels = mask_logits.shape
    if cls_logits.shape[0] != num_preds or len(segment_ids) != num_preds or \
            (valid is not None and len(valid) != num_preds):
        raise ValueError(f'merge_panoptic: {cls_logits.shape[0]} class rows, {num_preds} masks'
                         f', {len(segment_ids)} ids'
                         + ('' if valid is None else f' and {len(valid)} valid flags')
                         + ' differ')
    device = mask_logits.device
    if num_preds == 0:
        return (torch.full((num_voxels, ), free_class, dtype=torch.int32, device=device),
                torch.zeros(num_voxels, dtype=torch.int32, device=device))
    scores, labels = _float(cls_logits).sigmoid().max(-1)  # (P,)
    keep = (labels != free_class) & (scores > score_thresh)
    if valid is not None:
        keep = keep & valid.to(device=device, dtype=torch.bool)
    probs = _float(mask_logits).sigmoid()  # (P, N)
    own = probs >= 0.5  # (P, N)
    # score * prob in place (the dtype ``scores[:, None] * probs`` would have). Dropped rows
    # score -1 < 0 <= score * prob: they never win, and among the kept rows argmax picks the
    # first maximum, as it does over the kept subset.
    weighted = probs.to(torch.promote_types(scores.dtype, probs.dtype))
    weighted.mul_(scores[:, None].to(weighted.dtype)).masked_fill_(~keep[:, None], -1.0)
    winner = weighted.argmax(0)  # (N,)
    del probs, weighted

    ones = torch.ones_like(winner)
    won_area = torch.zeros(num_preds, dtype=torch.long, device=device).scatter_add_(
        0, winner, ones)
    own_area = own.sum(1)
    in_own = own.gather(0, winner[None])[0]  # winner's own mask covers the voxel
    kept_area = torch.zeros_like(won_area).scatter_add_(0, winner, in_own.long())
    ratio = won_area.double() / own_area.clamp(min=1).double()
    accepted = keep & (won_area > 0) & (own_area > 0) & (kept_area > 0) & \
        (ratio >= overlap_thresh)  # (P,)
    take = in_own & accepted[winner]  # (N,)
    semantics = torch.where(take, labels.to(torch.int32)[winner],
                            torch.full_like(winner, free_class, dtype=torch.int32))
    instances = torch.where(take, segment_ids.to(device=device, dtype=torch.int32)[winner],
                            torch.zeros_like(winner, dtype=torch.int32))
    return semantics, instances


def _float(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 if it already is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
