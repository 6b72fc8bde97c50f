"""Mask-classification loss of the stuff queries (Mask2Former style, per frame)."""
from typing import Dict, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor

from trackocc.registry import MODELS, TASK_UTILS
from .mask_losses import (DEFAULT_ASSIGNER, dice_loss_cfg, focal_loss_cfg, hungarian_match,
                          mask_bce_cfg, mean_count, visible_index, visible_mask_losses)
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
    """

    def __init__(self,
                 num_classes: int = 16,
                 thing_classes: Sequence[int] = (1, 2, 4),
                 assigner: dict = DEFAULT_ASSIGNER,
                 loss_cls: dict = focal_loss_cfg(4.0),
                 loss_mask: dict = mask_bce_cfg(5.0),
                 loss_dice: dict = dice_loss_cfg(5.0),
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
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
        cls_logits, mask_logits = cls_logits.float(), mask_logits.float()  # fp32 under AMP
        batch = cls_logits.shape[0]
        vis_idx = [visible_index(visible[b]) for b in range(batch)]
        targets = [stuff_targets(semantics[b], visible[b], self.num_classes,
                                 self.thing_classes) for b in range(batch)]
        avg = mean_count(sum(len(labels) for labels, _ in targets), cls_logits)
        loss_cls = loss_mask = loss_dice = cls_logits.sum() * 0
        for b, (labels, masks) in enumerate(targets):
            src, tgt = hungarian_match(self.assigner, cls_logits[b],
                                       mask_logits[b].index_select(1, vis_idx[b]), labels,
                                       masks.index_select(1, vis_idx[b]),
                                       num_voxels=mask_logits.shape[2])
            cls_target = torch.full((cls_logits.shape[1], ), self.num_classes - 1,
                                    dtype=torch.long, device=cls_logits.device)
            cls_target[src] = labels[tgt]
            loss_cls = loss_cls + self.loss_cls(cls_logits[b], cls_target, avg_factor=avg)
            bce, dice = visible_mask_losses(self.loss_mask, self.loss_dice,
                                            mask_logits[b][src], masks[tgt], vis_idx[b], avg)
            loss_mask = loss_mask + bce
            loss_dice = loss_dice + dice
        return dict(loss_stuff_cls=loss_cls, loss_stuff_mask=loss_mask,
                    loss_stuff_dice=loss_dice)
