"""Matching of track queries to the ground-truth instances of one frame and their losses
(MOTR's criterion for voxel masks): focal class loss, mask BCE, dice and the
localization-aware L1 loss on mask centroid and velocity.

The name is the original's (MOTR's ``ClipMatcher``): it runs per frame; the ids that link
the frames of a clip live in the track queries the detector carries (``obj_idxes``)."""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from mmdet.models.losses import weight_reduce_loss
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from trackocc.registry import MODELS, TASK_UTILS
from trackocc.utils.device_constants import to_device_async
from trackocc.utils.host_copy import HostCopy
from .mask_losses import (DEFAULT_ASSIGNER, CenterL1Cost, class_targets, dice_loss_cfg,
                          focal_loss_cfg, mask_bce_cfg, match_cost_matrix, mean_count,
                          solve_assignment, visible_index, visible_mask_losses)


class PendingMatch(NamedTuple):
    """:meth:`ClipMatcher.start_match`'s result: the host copy of the track state and the
    stacked cost matrices, and their (queries, gts, layers)."""
    copy: HostCopy
    shape: Tuple[int, int, int]


class LayerMatch(NamedTuple):
    """The matching of one decoder layer's queries in one frame (see
    :meth:`ClipMatcher.match_layers`)."""
    obj_idxes: Tensor         # (Q,) long: ids after matching
    matched_gt_idxes: Tensor  # (Q,) long: gt index per query, -1 for none
    src: Tensor               # (M,) long: supervised queries
    tgt: Tensor               # (M,) long: their gt index, -1 for disappeared tracks
    num_present: int          # pairs [0, num_present) are those with tgt >= 0
    active_index: Tensor      # (A,) long: the queries with an id after matching, ascending
    inactive_index: Tensor    # (Q - A,) long: the others, ascending


@MODELS.register_module()
class ClipMatcher(BaseModule):
    """Assigns the track queries of one frame to its gt instances and computes their
    losses; the detector calls it for every frame of a clip (and every decoder layer).
    Nothing is kept between calls: a query's gt id persists because the query carries it.

    Matching for one frame (:meth:`match`):

    1. a query that already tracks id ``k`` keeps gt ``k`` when present in the frame, else
       it is a disappeared track and is supervised as background;
    2. queries without id (-1: fresh queries and inserted false positives) are matched to
       the gt instances no query tracks yet with ``mmdet.HungarianAssigner`` (focal class
       cost 4, mask BCE cost 5 normalised by the whole grid, dice cost 5 over the visible
       voxels, as the reference's matcher);
    3. newly matched queries take the gt id (the caller carries it to the clip's next
       frames).

    Default loss weights reproduce the reference effective weights: class focal 4 (its
    FocalLoss weight 2 x cls weight 2), mask BCE 100, dice 5, centre L1 0.075 (its L1Loss
    weight 0.25 x centre weight 0.3) with ``code_weights`` on (x, y, z, vx, vy, vz).

    Args:
        num_classes (int): C; unmatched queries get the background target C.
        assigner (dict): Hungarian assigner config.
        loss_cls, loss_mask, loss_dice, loss_center (dict): mmdet loss configs.
        code_weights (list[float]): per-dimension weights of the centre L1 loss.
        center_supervise (bool): compute the centre/velocity loss.
        mask_pos_balance (float): weight of the positive voxels in the mask BCE
            (``visible_mask_losses``' ``pos_balance``; 0: the reference's unweighted BCE).
            Matching costs are not changed.
        center_cost_weight (float): > 0 adds a :class:`CenterL1Cost` of this weight (per
            metre) to the assigner's costs, so fresh queries are matched to objects near
            their predicted centres; 0 (default): the reference's mask-only matching.
    """

    def __init__(self,
                 num_classes: int = 16,
                 assigner: dict = DEFAULT_ASSIGNER,
                 loss_cls: dict = focal_loss_cfg(4.0),
                 loss_mask: dict = mask_bce_cfg(100.0),
                 loss_dice: dict = dice_loss_cfg(5.0),
                 loss_center: dict = dict(type='mmdet.L1Loss', loss_weight=0.075),
                 code_weights: Sequence[float] = (1.0, 1.0, 1.0, 0.2, 0.2, 0.2),
                 center_supervise: bool = True,
                 mask_pos_balance: float = 0.0,
                 center_cost_weight: float = 0.0,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if mask_pos_balance < 0:
            raise ValueError(f'ClipMatcher: mask_pos_balance must be >= 0, got '
                             f'{mask_pos_balance}')
        self.mask_pos_balance = mask_pos_balance
        self.num_classes = num_classes
        self.assigner = TASK_UTILS.build(assigner)
        if center_cost_weight:
            if not center_supervise:
                raise ValueError('ClipMatcher: center_cost_weight needs center_supervise '
                                 '(the centres it compares are the supervised ones)')
            self.assigner.match_costs.append(CenterL1Cost(weight=center_cost_weight))
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)
        self.center_supervise = center_supervise
        self.loss_center = MODELS.build(loss_center) if center_supervise else None
        self.register_buffer('code_weights', torch.tensor(code_weights, dtype=torch.float32),
                             persistent=False)

    @torch.no_grad()
    def match(self, obj_idxes: Tensor, cls_logits: Tensor, mask_logits: Tensor,
              gt: InstanceData, visible: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Match the Q track queries of one frame to its gt instances.

        Args:
            obj_idxes (Tensor): (Q,) long, gt instance id tracked by each query or -1.
            cls_logits (Tensor): (Q, C).
            mask_logits (Tensor): (Q, N) voxel mask logits.
            gt (InstanceData): ``obj_ids`` (K,), ``labels`` (K,), ``masks`` (K, N) bool.
            visible (Tensor): (N,) bool voxels used for matching (or their indices).

        Returns:
            new_obj_idxes (Q,): ids after matching (newly matched queries take the gt id).
            matched_gt_idxes (Q,): gt index per query, -1 for none.
            src, tgt (M,): supervised pairs; ``tgt == -1`` marks disappeared tracks.
        """
        return tuple(self.match_layers(obj_idxes, [(cls_logits, mask_logits)], gt,
                                       visible)[0][:4])

    @torch.no_grad()
    def start_match(self, obj_idxes: Tensor, layers: Sequence[Tuple[Tensor, Tensor]],
                    gt: InstanceData, visible: Tensor) -> PendingMatch:
        """The device half of :meth:`match_layers` (same arguments): the cost matrices of
        every layer and the track state, their copy to the host started without a wait.
        Started before another host read (e.g. the stuff matching's), the frame's two
        matchings wait for the device once."""
        num_queries, num_gts = len(obj_idxes), len(gt)
        gt_ids = gt.obj_ids.to(obj_idxes.device)
        tracked = obj_idxes >= 0
        eq = obj_idxes[:, None] == gt_ids[None]
        gt_idx = torch.where(tracked & eq.any(1), eq.float().argmax(1) if eq.numel() else
                             torch.zeros_like(obj_idxes), torch.full_like(obj_idxes, -1))
        # costs of every (query, gt) pair; the host picks the free queries and the
        # untracked gts (a cost depends on its own pair only)
        host = [gt_idx.float(), tracked.float(), (obj_idxes == -1).float()]
        if num_queries and num_gts:
            visible = visible_index(visible)
            gt_masks = gt.masks.index_select(1, visible)
            host += [match_cost_matrix(self.assigner, cls, masks.index_select(1, visible),
                                       gt.labels, gt_masks, num_voxels=masks.shape[1],
                                       pred_centers=centers[0] if centers else None,
                                       gt_centers=gt.get('centers'))
                     .flatten() for cls, masks, *centers in layers]
        return PendingMatch(HostCopy(torch.cat(host)), (num_queries, num_gts, len(layers)))

    @torch.no_grad()
    def match_layers(self, obj_idxes: Tensor, layers: Sequence[Tuple[Tensor, Tensor]],
                     gt: InstanceData, visible: Tensor,
                     started: Optional[PendingMatch] = None) -> List[LayerMatch]:
        """:meth:`match` for the predictions of every decoder layer of one frame (all
        match the same ``obj_idxes``), with one copy to the host (the stacked cost
        matrices and the track state) and one non-blocking copy of all indices back.

        Args:
            obj_idxes (Tensor): (Q,) long, see :meth:`match`.
            layers (list[tuple]): per layer ``(cls_logits (Q, C), mask_logits (Q, N))``,
                optionally followed by the predicted ``centers`` (Q, >= 3) in metres (a
                :class:`CenterL1Cost` in the assigner compares them with ``gt.centers``).
            gt (InstanceData): see :meth:`match`.
            visible (Tensor): (N,) bool voxels used for matching, or their (V,) long
                indices (:func:`visible_index`; no host synchronisation).
            started (PendingMatch, optional): :meth:`start_match` of the same arguments,
                called earlier (its copy to the host may be done by now); None: started
                here.

        Returns:
            list[LayerMatch]: per layer; ``src`` / ``tgt`` hold the newly matched pairs,
            then the tracked queries whose gt is present, then the disappeared tracks;
            ``active_index`` / ``inactive_index`` the queries with and without an id.
        """
        if started is None:
            started = self.start_match(obj_idxes, layers, gt, visible)
        elif started.shape != (len(obj_idxes), len(gt), len(layers)):
            raise ValueError(f'ClipMatcher.match_layers: started for (queries, gts, layers) '
                             f'{started.shape}, called with '
                             f'{(len(obj_idxes), len(gt), len(layers))}')
        device = obj_idxes.device
        num_queries, num_gts, num_layers = started.shape
        gt_ids = gt.obj_ids.to(device)
        host = started.copy.result().numpy()
        gt_idx_h = host[:num_queries].astype(np.int64)
        tracked_h = host[num_queries:2 * num_queries] > 0
        free = np.flatnonzero(host[2 * num_queries:3 * num_queries] > 0)
        costs = host[3 * num_queries:].reshape(num_layers, num_queries, num_gts) \
            if num_queries and num_gts else None

        untracked = np.ones(num_gts, dtype=bool)
        untracked[gt_idx_h[gt_idx_h >= 0]] = False
        untracked = np.flatnonzero(untracked)
        prev_src = np.flatnonzero(tracked_h)
        prev_tgt = gt_idx_h[prev_src]
        present = prev_tgt >= 0

        pieces, sizes = [], []
        for lid in range(num_layers):
            if costs is not None:
                rows, cols = solve_assignment(costs[lid][np.ix_(free, untracked)])
            else:
                rows = cols = np.zeros(0, dtype=np.int64)
            new_src, new_tgt = free[rows], untracked[cols]
            matched = gt_idx_h.copy()
            matched[new_src] = new_tgt
            src = np.concatenate([new_src, prev_src[present], prev_src[~present]])
            tgt = np.concatenate([new_tgt, prev_tgt[present], prev_tgt[~present]])
            # the rows the query interaction carries (ids >= 0), known here: it selects
            # them without reading their number back
            active = tracked_h.copy()
            active[new_src] = True
            pieces += [src, tgt, matched, np.flatnonzero(active), np.flatnonzero(~active)]
            sizes += [len(src), len(src), num_queries, int(active.sum()),
                      num_queries - int(active.sum())]
        indices = to_device_async(np.concatenate(pieces).astype(np.int64), device,
                                  torch.long).split(sizes)

        results = []
        for lid in range(num_layers):
            src, tgt, matched, active, inactive = indices[5 * lid:5 * lid + 5]
            num_new = len(src) - len(prev_src)
            new_obj_idxes = obj_idxes.clone()
            new_obj_idxes[src[:num_new]] = gt_ids[tgt[:num_new]].long()
            results.append(LayerMatch(new_obj_idxes, matched, src, tgt,
                                      num_new + int(present.sum()), active, inactive))
        return results

    def loss(self, cls_logits: Tensor, mask_logits: Tensor, centers: Optional[Tensor],
             gt: InstanceData, src: Tensor, tgt: Tensor, visible: Tensor,
             num_present: Optional[int] = None) -> Dict[str, Tensor]:
        """Losses of the matched pairs of one frame and decoder layer.

        Args:
            cls_logits (Tensor): (Q, C); every query gets a class target (background C
                unless matched to a present gt).
            mask_logits (Tensor): (Q, N).
            centers (Tensor, optional): (Q, 3 or 6) metric centre [+ velocity].
            gt (InstanceData): see :meth:`match` plus ``centers`` (K, 3 or 6), NaN where
                no velocity target exists.
            src, tgt (Tensor): pairs from :meth:`match`.
            visible (Tensor): (N,) bool voxels that count in the mask losses, or their
                (V,) long indices.
            num_present (int, optional): the pairs with ``tgt >= 0`` are the first
                ``num_present`` (:class:`LayerMatch`; no host synchronisation); None:
                found from ``tgt``.

        Returns:
            dict with ``loss_cls``, ``loss_mask``, ``loss_dice`` (+ ``loss_center``).
        """
        # losses in float32 also under AMP (the reference forced fp32 here); the mask logits
        # are widened by visible_mask_losses after their rows and voxels are gathered
        cls_logits = cls_logits.float()
        centers = centers.float() if centers is not None else None
        if num_present is None:
            present = tgt >= 0
            src_p, tgt_p = src[present], tgt[present]
        else:
            src_p, tgt_p = src[:num_present], tgt[:num_present]

        labels = torch.full((cls_logits.shape[0], ), self.num_classes, dtype=torch.long,
                            device=cls_logits.device)
        labels[src_p] = gt.labels.to(labels.device)[tgt_p]
        num_cls = mean_count(len(src), cls_logits)
        loss_cls = self.loss_cls(cls_logits, class_targets(self.loss_cls, cls_logits, labels),
                                 avg_factor=num_cls)

        num_pos = mean_count(len(src_p), cls_logits)
        loss_mask, loss_dice = visible_mask_losses(
            self.loss_mask, self.loss_dice, mask_logits[src_p], gt.masks[tgt_p], visible,
            num_pos, self.mask_pos_balance)
        losses = dict(loss_cls=loss_cls, loss_mask=loss_mask, loss_dice=loss_dice)

        if self.center_supervise:
            if centers is None:
                raise ValueError('ClipMatcher(center_supervise=True) needs predicted centers')
            pred = centers[src_p]
            target = gt.centers[tgt_p].to(pred.dtype)
            if pred.shape[-1] != target.shape[-1]:
                raise ValueError(f'predicted centers have {pred.shape[-1]} values but targets '
                                 f'{target.shape[-1]} (with_velo must match)')
            weights = self.code_weights[:target.shape[-1]].expand_as(target).clone()
            weights.masked_fill_(torch.isnan(target), 0)
            target = torch.nan_to_num(target, nan=0.0)
            # the weights applied here: mmdet's L1Loss reads `any(weight > 0)` on the host
            loss = self.loss_center(pred, target, reduction_override='none')
            losses['loss_center'] = weight_reduce_loss(loss, weights, 'mean', num_pos)
        return losses
