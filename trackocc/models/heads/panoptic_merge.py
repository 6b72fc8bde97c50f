"""Panoptic merge at inference: thing (track) and stuff mask predictions -> one voxel grid of
semantics and instance ids."""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from trackocc.ops.panoptic_merge import (MaskBlocks, MergeStats, acc_dtype, mask_blocks,
                                         panoptic_merge_stats)


@torch.no_grad()
def merge_panoptic(cls_logits: Tensor,
                   mask_logits: MaskBlocks,
                   segment_ids: Tensor,
                   free_class: int,
                   score_thresh: float = 0.3,
                   overlap_thresh: float = 0.7,
                   valid: Optional[Tensor] = None,
                   impl: Optional[str] = None,
                   refill: bool = False) -> Tuple[Tensor, Tensor]:
    """Merge mask predictions into per-voxel semantics and instance ids (Mask2Former
    panoptic inference, as the reference does it).

    Predictions whose best class is ``free_class`` or whose best probability is not above
    ``score_thresh`` (or that ``valid`` excludes) are dropped. Every voxel goes to the kept
    prediction maximizing ``score * mask_prob`` (the first one on ties); a prediction keeps
    the voxels it wins where its own mask probability is >= 0.5, and only if the voxels it
    wins (any mask probability) are at least ``overlap_thresh`` of its own mask (probability
    >= 0.5). Kept voxels take the prediction's class and segment id; the others stay
    ``free_class`` with id 0.

    Runs without host-device synchronisation: no shape depends on the data (every prediction
    is carried, dropped ones can never win a voxel). The pass over the (P, N) masks is
    :func:`trackocc.ops.panoptic_merge_stats` (one fused kernel on CUDA) with
    ``skip_dropped``: it reads only the rows that may be kept; probabilities and
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
        refill (bool): not in the reference (False): a voxel won by a prediction that is
            then dropped (it kept too little of its own mask) goes to the kept prediction
            maximizing ``score * mask_prob`` among those whose mask probability there is
            >= 0.5, instead of staying free. Which predictions are kept is unchanged.

    Returns:
        semantics (N,) int32, instances (N,) int32.
    """
    blocks, decision = _merge_decision(cls_logits, mask_logits, segment_ids, free_class,
                                       score_thresh, overlap_thresh, valid, impl,
                                       skip_dropped=True)
    if decision is None:
        num_voxels = blocks[0].shape[-1]
        device = blocks[0].device
        return (torch.full((num_voxels, ), free_class, dtype=torch.int32, device=device),
                torch.zeros(num_voxels, dtype=torch.int32, device=device))
    take, semantics, winner = _voxel_outcome(decision, free_class, torch.int32,
                                             blocks if refill else None)
    instances = torch.where(take, segment_ids.to(device=winner.device,
                                                 dtype=torch.int32)[winner],
                            torch.zeros_like(winner, dtype=torch.int32))
    return semantics, instances


class PanopticMerge(nn.Module):
    """:func:`merge_panoptic` as a (parameter-free) sub-module of the detector, called with
    the same keyword arguments, so that the inference merge can be wrapped like the other
    stages: under a query budget its inputs have the same shapes every frame (the head's
    padded rows, marked not ``valid``), so it can replay as a CUDA graph
    (:class:`~trackocc.utils.cuda_graph.CUDAGraphModule`) that reads the mask logits where the
    head's graph leaves them."""

    def forward(self, **merge_inputs) -> Tuple[Tensor, Tensor]:
        return merge_panoptic(**merge_inputs)


class MergeDecision(NamedTuple):
    """What the merge decided per prediction (P,) and per voxel (``stats``, N)."""
    scores: Tensor    # (P,) best class probability
    labels: Tensor    # (P,) best class
    accepted: Tensor  # (P,) bool: in the output
    stats: MergeStats


def _voxel_outcome(decision: MergeDecision, free_class: int, dtype: torch.dtype,
                   refill_blocks: Optional[list] = None):
    """(N,) bool voxels kept by their winner, (N,) class of every voxel (free where not
    kept) in ``dtype`` and (N,) winner; with ``refill_blocks`` (the mask logit blocks) the
    voxels a dropped prediction won go to their best claiming kept prediction
    (:func:`merge_panoptic` ``refill``)."""
    winner = decision.stats.winner
    take = decision.stats.in_own & decision.accepted[winner]
    if refill_blocks is not None:
        best, claimant = _best_kept_claimant(decision, refill_blocks)
        refilled = ~take & ~decision.accepted[winner] & (best > 0)
        winner = torch.where(refilled, claimant, winner)
        take = take | refilled
    classes = torch.where(take, decision.labels.to(dtype)[winner],
                          torch.full_like(winner, free_class, dtype=dtype))
    return take, classes, winner


def _best_kept_claimant(decision: MergeDecision, blocks: list) -> Tuple[Tensor, Tensor]:
    """Per voxel (N,), the highest ``score * mask_prob`` of the kept predictions whose mask
    probability there is >= 0.5 (0 where none) and that prediction (the first on ties);
    block by block, without host synchronisation."""
    best = claimant = None
    start = 0
    for block in blocks:
        rows = block.shape[0]
        prob = block.to(acc_dtype(block.dtype)).sigmoid()
        kept = decision.accepted[start:start + rows, None] & (prob >= 0.5)
        value = torch.where(kept, decision.scores[start:start + rows, None] * prob,
                            torch.zeros_like(prob))
        block_best, block_arg = value.max(0)
        block_arg = block_arg + start
        if best is None:
            best, claimant = block_best, block_arg
        else:
            better = block_best > best
            best = torch.where(better, block_best, best)
            claimant = torch.where(better, block_arg, claimant)
        start += rows
    return best, claimant


def _merge_decision(cls_logits, mask_logits, segment_ids, free_class, score_thresh,
                    overlap_thresh, valid, impl, skip_dropped=False):
    """(blocks, :class:`MergeDecision` or None when there is no prediction); with
    ``skip_dropped`` the statistics pass reads only the rows that may be kept (the dropped
    rows' ``own_area`` is then 0; the decision is the same)."""
    blocks = mask_blocks(mask_logits)
    num_preds = sum(b.shape[0] for b in blocks)
    if cls_logits.shape[0] != num_preds or len(segment_ids) != num_preds or \
            (valid is not None and len(valid) != num_preds):
        raise ValueError(f'merge_panoptic: {cls_logits.shape[0]} class rows, {num_preds} masks'
                         f', {len(segment_ids)} ids'
                         + ('' if valid is None else f' and {len(valid)} valid flags')
                         + ' differ')
    if num_preds == 0:
        return blocks, None
    device = blocks[0].device
    scores, labels = cls_logits.to(acc_dtype(cls_logits.dtype)).sigmoid().max(-1)  # (P,)
    keep = (labels != free_class) & (scores > score_thresh)
    if valid is not None:
        keep = keep & valid.to(device=device, dtype=torch.bool)
    stats = panoptic_merge_stats(blocks, scores, keep, skip_dropped=skip_dropped, impl=impl)
    ratio = stats.won_area.double() / stats.own_area.clamp(min=1).double()
    accepted = keep & (stats.won_area > 0) & (stats.own_area > 0) & (stats.kept_area > 0) & \
        (ratio >= overlap_thresh)  # (P,)
    return blocks, MergeDecision(scores, labels, accepted, stats)


# fates of a prediction in the merge (merge_fates)
MERGE_FATES = ('output', 'not_valid', 'low_score', 'empty_mask', 'overlap')


@torch.no_grad()
def merge_fates(cls_logits: Tensor, mask_logits: MaskBlocks, segment_ids: Tensor,
                free_class: int, score_thresh: float = 0.3, overlap_thresh: float = 0.7,
                valid: Optional[Tensor] = None, impl: Optional[str] = None,
                refill: bool = False) -> dict:
    """Why each prediction is or is not in :func:`merge_panoptic`'s output (same arguments).

    Returns a dict of (P,) tensors: ``labels`` (best class), ``scores``, ``fate`` (index into
    :data:`MERGE_FATES`: ``output``; ``not_valid`` (``valid`` excludes it); ``low_score``
    (best class free or probability not above ``score_thresh``); ``empty_mask`` (no voxel
    with probability >= 0.5); ``overlap`` (it wins less than ``overlap_thresh`` of its own
    mask)), ``own_area`` / ``won_area`` (voxels), ``max_prob`` (its highest voxel mask
    probability: how far an ``empty_mask`` prediction is from the 0.5 threshold) and
    ``voxels_end_as``: for ``overlap`` predictions the class that won most of its own-mask
    voxels (``free_class`` when they stay empty; with ``refill`` the class they are
    refilled with), -1 for the others.
    """
    blocks, decision = _merge_decision(cls_logits, mask_logits, segment_ids, free_class,
                                       score_thresh, overlap_thresh, valid, impl)
    if decision is None:
        empty = cls_logits.new_zeros(0, dtype=torch.long)
        return dict(labels=empty, scores=cls_logits.new_zeros(0), fate=empty,
                    own_area=empty, won_area=empty, max_prob=cls_logits.new_zeros(0),
                    voxels_end_as=empty)
    stats = decision.stats
    valid_rows = torch.ones_like(decision.accepted) if valid is None else \
        valid.to(device=decision.accepted.device, dtype=torch.bool)
    good_class = (decision.labels != free_class) & (decision.scores > score_thresh)
    fate = torch.full_like(decision.labels, MERGE_FATES.index('overlap'))
    fate[stats.own_area == 0] = MERGE_FATES.index('empty_mask')
    fate[~good_class] = MERGE_FATES.index('low_score')
    fate[~valid_rows] = MERGE_FATES.index('not_valid')
    fate[decision.accepted] = MERGE_FATES.index('output')
    # the class each voxel ends with, and per lost prediction the class of most of its voxels
    _, voxel_class, _ = _voxel_outcome(decision, free_class, decision.labels.dtype,
                                       blocks if refill else None)
    voxels_end_as = torch.full_like(decision.labels, -1)
    start = 0
    lost = fate == MERGE_FATES.index('overlap')
    for block in blocks:
        rows = torch.nonzero(lost[start:start + block.shape[0]]).flatten()
        for r in rows.tolist():
            own = block[r] >= 0  # probability >= 0.5
            voxels_end_as[start + r] = torch.bincount(voxel_class[own]).argmax()
        start += block.shape[0]
    max_prob = torch.cat([b.amax(-1).to(acc_dtype(b.dtype)).sigmoid() for b in blocks])
    return dict(labels=decision.labels, scores=decision.scores, fate=fate,
                own_area=stats.own_area, won_area=stats.won_area, max_prob=max_prob,
                voxels_end_as=voxels_end_as)
