"""Mask-classification loss of the stuff queries (Mask2Former style, per frame)."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.model import BaseModule
from torch import Tensor

from trackocc.registry import MODELS, TASK_UTILS
from trackocc.utils.batch_samples import batch_samples
from trackocc.utils.device_constants import to_device_async
from .mask_losses import (DEFAULT_ASSIGNER, class_targets, dice_loss_cfg, focal_loss_cfg,
                          mask_bce_cfg, match_cost_matrix, mean_count, solve_assignment,
                          visible_index, visible_mask_losses)
from .host_counts import HostCountChecks
from .thing_targets import stuff_targets


@MODELS.register_module()
class StuffMaskLoss(BaseModule):
    """Hungarian-matched stuff segment loss.

    Each class present among the visible voxels that is neither a thing class nor free is
    one gt segment. Segments are matched to the stuff queries (focal class cost 4, mask
    BCE cost 5 normalised by the whole grid, dice cost 5 over visible voxels, as the
    reference's matcher); matched queries learn the segment mask
    (BCE + dice) and class, every other query learns the class *free* (C - 1), as in the
    reference. Default weights: class focal 4 (reference FocalLoss weight 2 x cls 2),
    mask 5, dice 5; losses are divided by the number of gt segments of the batch.

    Args:
        num_classes (int): C (free = C - 1).
        thing_classes (list[int]): classes left to the thing queries.
        assigner, loss_cls, loss_mask, loss_dice (dict): configs.
        mask_pos_balance (float): weight of each segment's positive voxels in the mask BCE
            (``visible_mask_losses``' ``pos_balance``, as ``ClipMatcher``'s for things; not
            the reference's): thin stuff (poles, trunks: ~1e-4 of the visible voxels) is
            otherwise learnt by the dice alone; large segments (road) keep weight 1.
            0 (default): the reference's unweighted BCE. Matching costs are not changed.
    """

    def __init__(self,
                 num_classes: int = 16,
                 thing_classes: Sequence[int] = (1, 2, 4),
                 assigner: dict = DEFAULT_ASSIGNER,
                 loss_cls: dict = focal_loss_cfg(4.0),
                 loss_mask: dict = mask_bce_cfg(5.0),
                 loss_dice: dict = dice_loss_cfg(5.0),
                 mask_pos_balance: float = 0.0,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if mask_pos_balance < 0:
            raise ValueError(f'StuffMaskLoss: mask_pos_balance must be >= 0, got '
                             f'{mask_pos_balance}')
        self.mask_pos_balance = mask_pos_balance
        self.num_classes = num_classes
        self.thing_classes = list(thing_classes)
        self.assigner = TASK_UTILS.build(assigner)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)

    def forward(self, cls_logits: Tensor, mask_logits: Tensor, semantics: Tensor,
                visible: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            cls_logits (Tensor): (B, Q_s, C) stuff class logits.
            mask_logits (Tensor): (B, Q_s, N) stuff mask logits.
            semantics (Tensor): (B, N) gt class ids.
            visible (Tensor): (B, N) bool voxels that count.

        Returns:
            dict with ``loss_stuff_cls``, ``loss_stuff_mask``, ``loss_stuff_dice``.
        """
        return self.forward_layers([cls_logits], [mask_logits], semantics, visible)[0]

    def forward_layers(self, cls_logits: Sequence[Tensor], mask_logits: Sequence[Tensor],
                       semantics: Tensor, visible: Tensor,
                       visible_idx: Optional[Sequence[Tensor]] = None,
                       present: Optional[Sequence[Optional[Sequence[int]]]] = None,
                       checks: Optional[HostCountChecks] = None
                       ) -> List[Dict[str, Tensor]]:
        """:meth:`forward` for the outputs of every decoder layer: the targets are built
        once, and the cost matrices of all layers and samples go to the host in one copy
        (their matches come back in one non-blocking copy).

        Args:
            cls_logits (list[Tensor]): per layer (B, Q_s, C).
            mask_logits (list[Tensor]): per layer (B, Q_s, N).
            semantics, visible (Tensor): see :meth:`forward`.
            visible_idx (list[Tensor], optional): per sample the (V,) indices of ``visible``
                if known (else computed: one host synchronisation per sample on CUDA).
            present (list, optional): per sample the class ids of its visible voxels when
                the host knows them (else None): see :func:`stuff_targets`.
            checks (HostCountChecks, optional): collects the checks of ``present``.

        Returns:
            list[dict]: per layer, the losses of :meth:`forward`.
        """
        # fp32 under AMP; the mask logits are widened by visible_mask_losses (and the
        # matching) after their rows and voxels are gathered
        cls_logits = [c.float() for c in cls_logits]
        batch = semantics.shape[0]
        if visible_idx is not None and len(visible_idx) != batch:
            raise ValueError(f'StuffMaskLoss: {len(visible_idx)} visible_idx for {batch} '
                             'samples')
        vis_idx = list(visible_idx) if visible_idx is not None else \
            [visible_index(visible[b]) for b in range(batch)]
        if present is not None and len(present) != batch:
            raise ValueError(f'StuffMaskLoss: {len(present)} present for {batch} samples')
        targets = [stuff_targets(semantics[b], visible[b], self.num_classes,
                                 self.thing_classes,
                                 present=None if present is None else present[b],
                                 checks=checks) for b in range(batch)]
        avg = mean_count(sum(len(labels) for labels, _ in targets), cls_logits[0])
        # per layer the samples' (Q_s, N) logits as views (batch_samples: no zero-filled
        # gradient of the whole batch per sample)
        mask_logits = [batch_samples(m) for m in mask_logits]
        matches = self._match(cls_logits, mask_logits, targets, vis_idx)

        results = []
        for lid, (cls, masks) in enumerate(zip(cls_logits, mask_logits)):
            loss_cls = loss_mask = loss_dice = cls.sum() * 0
            for b, (labels, gt_masks) in enumerate(targets):
                src, tgt = matches[lid][b]
                cls_target = torch.full((cls.shape[1], ), self.num_classes - 1,
                                        dtype=torch.long, device=cls.device)
                cls_target[src] = labels[tgt]
                loss_cls = loss_cls + self.loss_cls(
                    cls[b], class_targets(self.loss_cls, cls[b], cls_target), avg_factor=avg)
                bce, dice = visible_mask_losses(self.loss_mask, self.loss_dice, masks[b][src],
                                                gt_masks[tgt], vis_idx[b], avg,
                                                self.mask_pos_balance)
                loss_mask = loss_mask + bce
                loss_dice = loss_dice + dice
            results.append(dict(loss_stuff_cls=loss_cls, loss_stuff_mask=loss_mask,
                                loss_stuff_dice=loss_dice))
        return results

    def _match(self, cls_logits: List[Tensor], mask_logits: List[Sequence[Tensor]],
               targets: list, vis_idx: List[Tensor]) -> List[List[Tuple[Tensor, Tensor]]]:
        """Hungarian matches ``[layer][sample] -> (src, tgt)`` of every layer and sample with
        one copy of the cost matrices to the host and one copy of the indices back
        (``mask_logits``: per layer the samples' (Q_s, N) logits)."""
        device = cls_logits[0].device
        costs, shapes = [], []
        for cls, masks in zip(cls_logits, mask_logits):
            for b, (labels, gt_masks) in enumerate(targets):
                shape = (cls.shape[1], len(labels))
                shapes.append(shape)
                if shape[0] and shape[1]:
                    costs.append(match_cost_matrix(
                        self.assigner, cls[b], masks[b].index_select(1, vis_idx[b]), labels,
                        gt_masks.index_select(1, vis_idx[b]),
                        num_voxels=masks[b].shape[1]).flatten())
        host = torch.cat(costs).cpu().numpy() if costs else np.zeros(0, dtype=np.float32)
        pieces, sizes, start = [], [], 0
        for num_queries, num_gts in shapes:
            cost = host[start:start + num_queries * num_gts].reshape(num_queries, num_gts)
            start += num_queries * num_gts
            rows, cols = solve_assignment(cost)
            pieces += [rows, cols]
            sizes += [len(rows), len(cols)]
        indices = to_device_async(np.concatenate(pieces), device, torch.long).split(sizes)
        pairs = list(zip(indices[0::2], indices[1::2]))
        num_samples = len(targets)
        return [pairs[lid * num_samples:(lid + 1) * num_samples]
                for lid in range(len(cls_logits))]
