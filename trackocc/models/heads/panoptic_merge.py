"""Panoptic merge at inference: thing (track) and stuff mask predictions -> one voxel grid of
semantics and instance ids."""
import functools
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

# voxels count into this many slots per prediction (then summed): spreads the atomic adds
_AREA_LANES = 32


@torch.no_grad()
def merge_panoptic(cls_logits: Tensor,
                   mask_logits: Union[Tensor, Sequence[Tensor]],
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
    (fixed shapes) and dropped ones score -1, so they never win a voxel. Probabilities are
    computed in float32 (float64 for float64 logits), also for fp16/bf16 logits. Mask
    logits are assumed not NaN (a NaN in a dropped prediction could win voxels, which then
    stay free).

    Args:
        cls_logits (Tensor): (P, C) class logits (sigmoid).
        mask_logits (Tensor | list[Tensor]): (P, N) voxel mask logits, or consecutive row
            blocks of them (e.g. thing and stuff masks, not concatenated first).
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
    parts = [mask_logits] if isinstance(mask_logits, Tensor) else list(mask_logits)
    num_preds = sum(p.shape[0] for p in parts)
    num_voxels = parts[0].shape[1]
    if cls_logits.shape[0] != num_preds or len(segment_ids) != num_preds or \
            (valid is not None and len(valid) != num_preds) or \
            any(p.dim() != 2 or p.shape[1] != num_voxels for p in parts):
        raise ValueError(f'merge_panoptic: {cls_logits.shape[0]} class rows, masks of shapes '
                         f'{[tuple(p.shape) for p in parts]}, {len(segment_ids)} ids'
                         + ('' if valid is None else f' and {len(valid)} valid flags')
                         + ' differ')
    device = parts[0].device
    free = torch.full((num_voxels, ), free_class, dtype=torch.int32, device=device)
    if num_preds == 0:
        return free, torch.zeros_like(free)
    scores, labels = _float(cls_logits).sigmoid().max(-1)  # (P,)
    keep = (labels != free_class) & (scores > score_thresh)
    if valid is not None:
        keep = keep & valid.to(device=device, dtype=torch.bool)

    # mask probabilities, block by block into one buffer
    dtype = functools.reduce(torch.promote_types, [p.dtype for p in parts], torch.float32)
    weighted = torch.empty(num_preds, num_voxels, dtype=dtype, device=device)  # (P, N)
    start = 0
    for part in parts:
        rows = weighted[start:start + part.shape[0]]
        if part.dtype == dtype:
            torch.sigmoid(part, out=rows)
        else:
            rows.copy_(part).sigmoid_()
        start += part.shape[0]
    own = weighted >= 0.5  # (P, N)
    own_area = own.sum(1)  # (P,)
    # score * prob (in the dtype ``scores[:, None] * probs`` has) for kept rows, -1 for
    # dropped ones: one pass, computing 0 + score * prob, exactly score * prob
    dtype = torch.promote_types(scores.dtype, dtype)
    weighted = weighted.to(dtype)
    scale = torch.where(keep, scores.to(dtype), 0)[:, None]
    offset = torch.where(keep, 0, -1).to(dtype)[:, None]
    torch.addcmul(offset, weighted, scale, out=weighted)
    # first maximum: among the kept rows the same as over the kept subset (values >= 0)
    winner = weighted.argmax(0)  # (N,)
    del weighted
    in_own = own.gather(0, winner[None])[0]  # (N,) winner's own mask covers the voxel

    # won and kept areas by one scatter: 1 + (in_own << 32) per voxel
    lane = torch.arange(num_voxels, device=device) % _AREA_LANES
    counts = torch.zeros(num_preds * _AREA_LANES, dtype=torch.long, device=device)
    counts.scatter_add_(0, winner * _AREA_LANES + lane, 1 + (in_own.long() << 32))
    counts = counts.view(num_preds, _AREA_LANES).sum(1)  # (P,)
    won_area, kept_area = counts & 0xFFFFFFFF, counts >> 32
    ratio = won_area.double() / own_area.clamp(min=1).double()
    accepted = keep & (won_area > 0) & (own_area > 0) & (kept_area > 0) & \
        (ratio >= overlap_thresh)  # (P,)
    take = in_own & accepted[winner]  # (N,)
    semantics = torch.where(take, labels.to(torch.int32)[winner], free)
    instances = torch.where(take, segment_ids.to(device=device, dtype=torch.int32)[winner], 0)
    return semantics, instances


def _float(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 if it already is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
