"""Shared pieces of the mask-classification losses: visible-voxel mask BCE + dice, and
Hungarian matching of mask queries to ground-truth segments with mmdet match costs."""
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss
from mmdet.models.task_modules.assigners.match_cost import CrossEntropyLossCost
from mmdet.utils import reduce_mean
from mmengine.dist import is_distributed
from mmengine.structures import InstanceData
from mmengine.utils import digit_version
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from trackocc.registry import TASK_UTILS
from trackocc.utils.device_constants import to_device_async


@TASK_UTILS.register_module()
class VoxelMaskCrossEntropyCost(CrossEntropyLossCost):
    """Sigmoid mask BCE cost of (Q, V) mask logits against (K, V) gt masks over the V
    voxels that count (``use_sigmoid`` only).

    The summed BCE of logits x against a binary target t is
    ``sum_v softplus(x_v) - sum_v x_v t_v`` (``BCE(x, t) = softplus(x) - x t``), so the cost
    is one row sum and one matrix product: mmdet's ``CrossEntropyLossCost`` (the same value up
    to float rounding, ``tests/models/test_match_costs_reference.py``) builds the BCE against
    all-ones and all-zeros targets, four more (Q, V) tensors and a second product: ~3 GiB of
    memory traffic per matching of the paper config, six matchings per training clip.

    Args:
        weight (float): cost weight.
        normalizer (str): ``'grid'`` (the reference): the summed BCE is divided by the
            number of voxels of the whole grid, given as ``img_meta['num_voxels']``
            (invisible voxels count as zero-cost voxels, the reference's ``mask_camera``
            weighted cost over all N); ``'given'``: divided by V (mmdet's
            ``CrossEntropyLossCost``), which weights the cost by N / V more.
    """

    def __init__(self, weight: float = 1.0, normalizer: str = 'grid') -> None:
        super().__init__(use_sigmoid=True, weight=weight)
        if normalizer not in ('grid', 'given'):
            raise ValueError(f"VoxelMaskCrossEntropyCost: normalizer must be 'grid' or "
                             f"'given', got {normalizer!r}")
        self.normalizer = normalizer

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        logits = pred_instances.masks.flatten(1).float()  # (Q, V)
        target = gt_instances.masks.flatten(1).to(logits.dtype)  # (K, V)
        if self.normalizer == 'given':
            divisor = logits.shape[1]
        elif not img_meta or 'num_voxels' not in img_meta:
            raise KeyError("VoxelMaskCrossEntropyCost(normalizer='grid') needs "
                           "img_meta['num_voxels'] (the grid size; see hungarian_match)")
        else:
            divisor = float(img_meta['num_voxels'])
        if logits.shape[1] == 0:  # no voxel counts: no mask cost
            return logits.new_zeros(logits.shape[0], target.shape[0])
        summed = F.softplus(logits).sum(1, keepdim=True) - logits @ target.t()  # (Q, K)
        return summed * (self.weight / divisor)


@TASK_UTILS.register_module()
class CenterL1Cost:
    """L1 distance in metres (summed over x, y, z) between predicted thing centres and the
    voxel centroids of the gt instances, times ``weight``: a locality term for Hungarian
    matching (as DETR3D's ``BBox3DL1Cost`` on metric box centres), so a fresh query is
    matched to an object near its reference point, where its centre regression starts.

    Reads ``pred_instances.centers`` (Q, >= 3) and ``gt_instances.centers`` (K, >= 3; values
    after the third, e.g. velocities, are ignored) and returns (Q, K).

    Args:
        weight (float): cost per metre.
    """

    def __init__(self, weight: float = 0.25) -> None:
        if weight < 0:
            raise ValueError(f'CenterL1Cost: weight must be >= 0, got {weight}')
        self.weight = weight

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        for side, instances in (('pred_instances', pred_instances),
                                ('gt_instances', gt_instances)):
            if 'centers' not in instances:
                raise KeyError(f'CenterL1Cost needs {side}.centers (metric centres): it '
                               f'is a cost of the thing-query matching (ClipMatcher)')
        pred = pred_instances.centers[:, :3].float()
        gt = gt_instances.centers[:, :3].to(pred)
        return torch.cdist(pred, gt, p=1) * self.weight


# mmdet parts, named with their scope so they build under default_scope='trackocc'; ours by
# class (a scoped 'trackocc.X' is not found from mmdet's registry outside that scope: MMEngine
# looks scoped names up among the root registry's children, and trackocc's are grandchildren).
# The reference's matchers: cost_class 2 x FocalLossCost(weight=2) = focal cost weight 4, mask
# BCE cost 5 (summed over visible voxels, divided by the whole grid), dice cost 5 (visible
# voxels), for the thing (track) queries and the stuff queries alike.
DEFAULT_ASSIGNER = dict(
    type='mmdet.HungarianAssigner',
    match_costs=[
        dict(type='mmdet.FocalLossCost', weight=4.0),
        dict(type=VoxelMaskCrossEntropyCost, weight=5.0, normalizer='grid'),
        dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0),
    ])


def focal_loss_cfg(loss_weight: float) -> dict:
    return dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                loss_weight=loss_weight)


def class_targets(loss_cls, cls_logits: Tensor, labels: Tensor) -> Tensor:
    """Targets of ``loss_cls`` for (Q, C) logits and (Q,) labels in [0, C] (C: none).

    mmdet's sigmoid ``FocalLoss`` gets them one-hot (Q, C), the form it builds itself on
    CPU: with class indices on CUDA it calls mmcv's kernel, which reads ``labels.max()`` on
    the host. Other losses get ``labels``.
    """
    if isinstance(loss_cls, FocalLoss) and loss_cls.use_sigmoid and not loss_cls.activated:
        num_classes = cls_logits.shape[1]
        return F.one_hot(labels, num_classes + 1)[:, :num_classes]
    return labels


def mask_bce_cfg(loss_weight: float) -> dict:
    return dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=loss_weight)


def dice_loss_cfg(loss_weight: float) -> dict:
    return dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, naive_dice=True,
                eps=1.0, loss_weight=loss_weight)


# torch.nonzero_static has a CPU kernel from torch 2.1 and a CUDA one (which does not read
# the count back) from 2.6; before, CUDA keeps nonzero
_CUDA_NONZERO_STATIC = digit_version(torch.__version__) >= digit_version('2.6.0')


def visible_index(visible: Tensor, count: Optional[int] = None) -> Tensor:
    """(V,) long indices of the voxels that count, from an (N,) bool mask, or as given when
    already indices. With ``count`` (V known on the host, e.g. from the ground truth's
    ``voxel_counts``) no host synchronisation: ``nonzero_static`` (a wrong count pads with
    index 0 or truncates; the caller checks ``visible.sum() == count`` on the device);
    without it one host synchronisation on CUDA."""
    if visible.dtype != torch.bool:
        return visible
    if count is not None and (visible.device.type == 'cpu' or _CUDA_NONZERO_STATIC):
        return torch.nonzero_static(visible, size=count, fill_value=0)[:, 0]
    return torch.nonzero(visible, as_tuple=True)[0]


def mean_count(count: int, like: Tensor) -> Union[float, Tensor]:
    """``max(1, count)`` averaged over the ranks, the ``avg_factor`` of a loss.

    Not distributed: a Python float (no device round trip). Distributed: a 0-dim tensor on
    ``like``'s device (all-reduced, never read back on the host); the mmdet losses take
    either."""
    if not is_distributed():
        return float(max(count, 1))
    return reduce_mean(torch.full((), float(count), device=like.device)).clamp(min=1)


# the cost of a pair whose prediction is not finite (NaN / inf mask logits): far above any
# finite cost (each term is a few units), so such a query is matched only when it must be
UNSOLVABLE_COST = 1e6


def match_cost_matrix(assigner, cls_logits: Tensor, mask_logits: Tensor, gt_labels: Tensor,
                      gt_masks: Tensor, num_voxels: Optional[int] = None,
                      pred_centers: Optional[Tensor] = None,
                      gt_centers: Optional[Tensor] = None) -> Tensor:
    """(Q, K) float32 Hungarian cost: the sum of ``assigner.match_costs`` (as
    ``mmdet.HungarianAssigner.assign`` computes it), on the device of the inputs.

    Args: see :func:`hungarian_match`; Q and K must be > 0. ``pred_centers`` (Q, >= 3) and
    ``gt_centers`` (K, >= 3), metric, for a :class:`CenterL1Cost`.
    """
    if not hasattr(assigner, 'match_costs'):
        raise TypeError(f'hungarian matching needs an assigner with match_costs (e.g. '
                        f'mmdet.HungarianAssigner), got {type(assigner).__name__}')
    # Costs are (Q, V) x (V, K) products over up to 640k voxels: under fp16 autocast they
    # overflow and the cost matrix becomes unsolvable, so matching always runs in float32.
    with torch.no_grad(), torch.autocast(cls_logits.device.type, enabled=False):
        # a NaN prediction would make the cost matrix unsolvable; the loss itself stays
        # NaN and the detector stops with a message naming it. Class scores and centres
        # are read as 0 where NaN; a non-finite mask logit makes its query's costs
        # UNSOLVABLE_COST (checked on the (Q, K) sum, not on a copy of the (Q, V) logits).
        pred = InstanceData(scores=torch.nan_to_num(cls_logits.detach().float()),
                            masks=mask_logits.detach().float())
        gt = InstanceData(labels=gt_labels, masks=gt_masks)
        if pred_centers is not None and gt_centers is not None:
            pred.centers = torch.nan_to_num(pred_centers.detach().float())
            gt.centers = gt_centers
        meta = dict(num_voxels=mask_logits.shape[1] if num_voxels is None else num_voxels)
        costs = [cost(pred_instances=pred, gt_instances=gt, img_meta=meta)
                 for cost in assigner.match_costs]
        return torch.nan_to_num(torch.stack(costs).sum(dim=0), nan=UNSOLVABLE_COST,
                                posinf=UNSOLVABLE_COST, neginf=-UNSOLVABLE_COST)


def solve_assignment(cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of a (Q, K) host cost matrix (scipy, as
    ``mmdet.HungarianAssigner``): (rows, cols), each (min(Q, K),) int64, rows ascending."""
    if cost.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(rows, kind='stable')
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def hungarian_match(assigner, cls_logits: Tensor, mask_logits: Tensor, gt_labels: Tensor,
                    gt_masks: Tensor, num_voxels: Optional[int] = None
                    ) -> Tuple[Tensor, Tensor]:
    """One-to-one match of predictions to gt segments: one copy of the cost matrix to the
    host and one non-blocking copy of the indices back.

    Args:
        assigner: a built ``mmdet.HungarianAssigner`` (its ``match_costs`` are used).
        cls_logits (Tensor): (Q, C) class logits.
        mask_logits (Tensor): (Q, V) mask logits over the voxels that count (visible).
        gt_labels (Tensor): (K,) long.
        gt_masks (Tensor): (K, V) bool.
        num_voxels (int, optional): N, voxels of the whole grid (passed to the costs as
            ``img_meta['num_voxels']``; default V).

    Returns:
        (src, tgt): matched prediction and gt indices, each (min(Q, K),) long, ``src``
        ascending.
    """
    device = cls_logits.device
    if len(gt_labels) == 0 or len(cls_logits) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    cost = match_cost_matrix(assigner, cls_logits, mask_logits, gt_labels, gt_masks,
                             num_voxels)
    rows, cols = solve_assignment(cost.cpu().numpy())
    pairs = to_device_async(np.stack([rows, cols]), device, torch.long)
    return pairs[0], pairs[1]


def visible_mask_losses(loss_mask, loss_dice, mask_logits: Tensor, gt_masks: Tensor,
                        visible: Tensor, avg_factor: float,
                        pos_balance: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Mask BCE and dice of matched pairs, over the visible voxels only.

    The BCE is averaged over *all* N voxels of the grid (invisible voxels count as 0, as in
    the reference) and summed over masks; both losses are divided by ``avg_factor``.

    ``pos_balance`` > 0 (not the reference's: an ablation for small objects) weighs each
    mask's positive voxels by ``max(1, pos_balance * negatives / positives)`` (its visible
    voxels) in the BCE: under the grid average a 4-voxel object's positives are ~6e-6 of
    the term and only the dice acts on them; with the weight its positives sum to at least
    ``pos_balance`` times its negatives. 0 (default): unweighted, as the reference.

    Args:
        loss_mask: built ``mmdet.CrossEntropyLoss(use_sigmoid=True)``.
        loss_dice: built ``mmdet.DiceLoss(naive_dice=True, eps=1)``.
        mask_logits (Tensor): (M, N) logits of the matched predictions (any floating
            dtype; the losses run in float32).
        gt_masks (Tensor): (M, N) bool targets.
        visible (Tensor): (N,) bool voxels that count, or their (V,) long indices
            (:func:`visible_index`; no host synchronisation).
        avg_factor (float | Tensor): number of masks to average over.
        pos_balance (float): weight of the positive voxels, see above (0: none).
    """
    if pos_balance < 0:
        raise ValueError(f'visible_mask_losses: pos_balance must be >= 0, got {pos_balance}')
    if mask_logits.shape[0] == 0:
        zero = mask_logits.sum().float() * 0
        return zero, zero
    num_voxels = mask_logits.shape[1]
    visible = visible_index(visible)
    pred = mask_logits.index_select(1, visible).float()  # widened after the gather
    target = gt_masks.index_select(1, visible).to(pred.dtype)
    weight = None
    if pos_balance > 0:
        pos = target.sum(1, keepdim=True)  # (M, 1)
        pos_weight = (pos_balance * (target.shape[1] - pos) / pos.clamp(min=1)).clamp(min=1)
        weight = torch.where(target > 0, pos_weight, torch.ones_like(target))
    bce = loss_mask(pred, target, weight=weight, avg_factor=avg_factor * num_voxels)
    dice = loss_dice(pred, target, avg_factor=avg_factor)
    return bce, dice
