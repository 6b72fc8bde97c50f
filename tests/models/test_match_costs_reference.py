"""The Hungarian matching costs of the thing and stuff queries are the reference matcher's:
cost_class 2 x FocalLossCost(weight 2), 5 x mask BCE summed over the visible voxels and divided
by all voxels of the grid, 5 x dice over the visible voxels (utils/matcher.py of the original),
written out independently here."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData

from trackocc.registry import TASK_UTILS
from trackocc.models.losses.mask_losses import DEFAULT_ASSIGNER, hungarian_match


def reference_cost(cls_logits, mask_logits, labels, gt_masks, visible):
    """The original matcher's cost matrix (Q, K) on the full grid with a visibility mask."""
    n = mask_logits.shape[1]
    prob = cls_logits.sigmoid()
    neg = -(1 - prob + 1e-12).log() * (1 - 0.25) * prob.pow(2)
    pos = -(prob + 1e-12).log() * 0.25 * (1 - prob).pow(2)
    cost_class = 2.0 * (2.0 * (pos[:, labels] - neg[:, labels]))
    w = visible.float()[None].expand_as(mask_logits)
    bce_pos = F.binary_cross_entropy_with_logits(mask_logits, torch.ones_like(mask_logits), w,
                                                 reduction='none')
    bce_neg = F.binary_cross_entropy_with_logits(mask_logits, torch.zeros_like(mask_logits), w,
                                                 reduction='none')
    tgt = gt_masks.float()
    cost_mask = (bce_pos @ tgt.T + bce_neg @ (1 - tgt).T) / n
    p, t = mask_logits[:, visible].sigmoid(), tgt[:, visible]
    cost_dice = 1 - (2 * p @ t.T + 1) / (p.sum(-1)[:, None] + t.sum(-1)[None] + 1)
    return 5.0 * cost_mask + cost_class + 5.0 * cost_dice


def case(seed=0, Q=5, K=3, N=60):
    gen = torch.Generator().manual_seed(seed)
    cls = torch.randn(Q, 16, generator=gen) * 2
    masks = torch.randn(Q, N, generator=gen) * 3
    labels = torch.randint(0, 15, (K, ), generator=gen)
    gt = torch.rand(K, N, generator=gen) > 0.6
    visible = torch.rand(N, generator=gen) > 0.5
    return cls, masks, labels, gt, visible


def our_cost(assigner, cls, masks, labels, gt, visible):
    pred = InstanceData(scores=cls, masks=masks[:, visible])
    target = InstanceData(labels=labels, masks=gt[:, visible])
    meta = dict(num_voxels=masks.shape[1])
    return sum(c(pred, target, img_meta=meta) for c in assigner.match_costs)


def test_default_cost_matrix_is_the_reference_one():
    assigner = TASK_UTILS.build(DEFAULT_ASSIGNER)
    for seed in range(3):
        cls, masks, labels, gt, visible = case(seed)
        want = reference_cost(cls, masks, labels, gt, visible)
        got = our_cost(assigner, cls, masks, labels, gt, visible)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got, want)


def test_matching_minimises_the_reference_cost():
    assigner = TASK_UTILS.build(DEFAULT_ASSIGNER)
    cls, masks, labels, gt, visible = case(7, Q=5, K=3)
    want = reference_cost(cls, masks, labels, gt, visible)
    best = min(itertools.permutations(range(5), 3),
               key=lambda rows: float(sum(want[r, k] for k, r in enumerate(rows))))
    src, tgt = hungarian_match(assigner, cls, masks[:, visible], labels, gt[:, visible],
                               num_voxels=masks.shape[1])
    assert dict(zip(tgt.tolist(), src.tolist())) == dict(enumerate(best))


def test_mask_cost_normalizers():
    cls, masks, labels, gt, visible = case(1)
    grid = TASK_UTILS.build(dict(type='VoxelMaskCrossEntropyCost', weight=5.0))
    given = TASK_UTILS.build(dict(type='VoxelMaskCrossEntropyCost', weight=5.0,
                                  normalizer='given'))
    pred = InstanceData(masks=masks[:, visible])
    target = InstanceData(masks=gt[:, visible])
    meta = dict(num_voxels=masks.shape[1])
    ratio = masks.shape[1] / int(visible.sum())
    assert torch.allclose(given(pred, target, img_meta=meta),
                          grid(pred, target, img_meta=meta) * ratio, rtol=1e-6)
    with pytest.raises(KeyError, match='num_voxels'):
        grid(pred, target)
    with pytest.raises(ValueError, match='normalizer'):
        TASK_UTILS.build(dict(type='VoxelMaskCrossEntropyCost', normalizer='visible'))


@pytest.mark.parametrize('scale', [1.0, 30.0])
def test_voxel_mask_cost_is_the_summed_bce_in_one_product(scale):
    """softplus(x) summed minus x @ t: the summed BCE (float64 here) as closely as mmdet's
    cost, without its all-ones / all-zeros targets and BCE tensors."""
    from mmdet.models.task_modules.assigners.match_cost import CrossEntropyLossCost
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func._overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 20000, generator=gen) * scale
    gt = torch.rand(6, 20000, generator=gen) > 0.7
    pred, target = InstanceData(masks=logits), InstanceData(masks=gt)
    ours = TASK_UTILS.build(dict(type='VoxelMaskCrossEntropyCost', weight=5.0,
                                 normalizer='given'))
    with Ops() as ops:
        got = ours(pred, target)
    x, t = logits.double(), gt.double()
    exact = (F.softplus(-x) @ t.T + F.softplus(x) @ (1 - t).T) * (5.0 / x.shape[1])
    mmdet = CrossEntropyLossCost(use_sigmoid=True, weight=5.0)(pred, target).double()
    ours_err = float((got.double() - exact).abs().max())
    assert ours_err <= 2e-6 * float(exact.abs().max())
    assert ours_err <= float((mmdet - exact).abs().max()) + 1e-6 * float(exact.abs().max())
    assert not {'binary_cross_entropy_with_logits', 'ones_like', 'zeros_like'} & \
        set(ops.names), ops.names
    empty = ours(InstanceData(masks=logits[:, :0]), InstanceData(masks=gt[:, :0]))
    assert empty.shape == (20, 6) and not empty.any()
