"""Thing targets, clip matcher (matching + losses) and stuff mask loss on constructed cases."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import BaseDataElement, InstanceData

from trackocc.models.losses import (CenterL1Cost, ClipMatcher, StuffMaskLoss,
                                    build_thing_targets, stuff_targets, voxel_centers)

PC_RANGE = [0.0, 0.0, 0.0, 4.0, 4.0, 2.0]  # 4 x 4 x 2 voxels of 1 m
OCC = (4, 4, 2)


def gt_frame(instances, ids, labels):
    inst = torch.zeros(OCC, dtype=torch.long)
    for iid, voxels in instances.items():
        for v in voxels:
            inst[v] = iid
    return BaseDataElement(instances=inst, instance_ids=torch.tensor(ids),
                           instance_labels=torch.tensor(labels))


def pose(yaw_deg, tx, ty):
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    return [[c, -s, 0, tx], [s, c, 0, ty], [0, 0, 1, 0], [0, 0, 0, 1]]


def test_voxel_centers_order():
    c = voxel_centers(OCC, PC_RANGE)
    assert c.shape == (32, 3)
    assert c[0].tolist() == [0.5, 0.5, 0.5]
    assert c[1].tolist() == [0.5, 0.5, 1.5]  # z fastest
    assert c[2].tolist() == [0.5, 1.5, 0.5]
    assert c[-1].tolist() == [3.5, 3.5, 1.5]


def test_build_thing_targets_centers_and_velocity():
    f0 = gt_frame({5: [(0, 0, 0), (1, 0, 0)], 9: [(3, 3, 1)]}, [5, 9, 11], [1, 2, 4])
    f1 = gt_frame({5: [(2, 0, 0), (3, 0, 0)]}, [5], [1])
    # the ego moves 1 m along x between the frames (no rotation)
    targets = build_thing_targets([f0, f1], [pose(0, 0, 0), pose(0, 1, 0)], PC_RANGE,
                                  time_interval=0.5)
    t0, t1 = targets
    # id 11 has no voxel and is dropped
    assert t0.obj_ids.tolist() == [5, 9] and t0.labels.tolist() == [1, 2]
    assert t0.masks.shape == (2, 32) and t0.masks.sum(1).tolist() == [2, 1]
    assert t0.centers[0, :3].tolist() == [1.0, 0.5, 0.5]
    assert t0.centers[1, :3].tolist() == [3.5, 3.5, 1.5]
    # id 5: centre (3.0, 0.5) in frame 1 = (4.0, 0.5) in frame 0's ego frame -> 3 m / 0.5 s
    assert t0.centers[0, 3:].tolist() == pytest.approx([6.0, 0.0, 0.0])
    assert torch.isnan(t0.centers[1, 3:]).all()  # id 9 absent in the next frame
    assert torch.isnan(t1.centers[:, 3:]).all()  # last frame of the clip
    no_velo = build_thing_targets([f0], [pose(0, 0, 0)], PC_RANGE, with_velo=False)
    assert no_velo[0].centers.shape == (2, 3)


def test_stuff_targets():
    sem = torch.tensor([13, 13, 1, 15, 10, 3, 255, 10])
    vis = torch.tensor([1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    labels, masks = stuff_targets(sem, vis, 16, [1, 2, 4])
    assert labels.tolist() == [10, 13]  # sign (3) is invisible, 255 / free / thing ignored
    assert masks.int().tolist() == [[0, 0, 0, 0, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0, 0, 0]]


def gt_instances(masks, ids, labels, centers=None):
    masks = torch.tensor(masks, dtype=torch.bool)
    if centers is None:
        centers = torch.zeros(len(ids), 6)
    return InstanceData(obj_ids=torch.tensor(ids), labels=torch.tensor(labels), masks=masks,
                        centers=centers)


def logits_from(masks, value=8.0):
    return (torch.tensor(masks, dtype=torch.float) * 2 - 1) * value


def class_logits(labels, num_classes=16, value=6.0):
    out = torch.full((len(labels), num_classes), -value)
    for i, c in enumerate(labels):
        if c is not None:
            out[i, c] = value
    return out


def test_clip_matcher_match_keeps_ids_and_matches_new():
    matcher = ClipMatcher(num_classes=16)
    gt_masks = [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]
    gt = gt_instances(gt_masks, ids=[7, 3, 5], labels=[1, 2, 4])
    # query 1 tracks id 7 (present), query 3 tracks id 9 (gone);
    # free queries 0 and 2 look like gt 5 and gt 3; free query 4 is junk
    pred_masks = logits_from([gt_masks[2], [0] * 6, gt_masks[1], [0] * 6, [1, 0, 1, 0, 1, 0]])
    pred_cls = class_logits([4, None, 2, None, None])
    obj = torch.tensor([-1, 7, -1, 9, -1])
    visible = torch.ones(6, dtype=torch.bool)
    new_obj, matched, src, tgt = matcher.match(obj, pred_cls, pred_masks, gt, visible)
    assert new_obj.tolist() == [5, 7, 3, 9, -1]
    assert matched.tolist() == [2, 0, 1, -1, -1]
    pairs = sorted(zip(src.tolist(), tgt.tolist()))
    assert pairs == [(0, 2), (1, 0), (2, 1), (3, -1)]
    # the input ids are not modified in place
    assert obj.tolist() == [-1, 7, -1, 9, -1]


def test_clip_matcher_match_uses_visible_voxels_only():
    matcher = ClipMatcher(num_classes=16)
    gt = gt_instances([[1, 1, 0, 0]], ids=[4], labels=[1])
    # each query covers one half of the gt; only the visible half decides the match
    pred_masks = logits_from([[1, 0, 0, 0], [0, 1, 0, 0]])
    pred_cls = class_logits([1, 1])
    visible = torch.tensor([1, 0, 1, 1], dtype=torch.bool)
    new_obj, _, _, _ = matcher.match(torch.tensor([-1, -1]), pred_cls, pred_masks, gt, visible)
    assert new_obj.tolist() == [4, -1]
    visible = torch.tensor([0, 1, 1, 1], dtype=torch.bool)
    new_obj, _, _, _ = matcher.match(torch.tensor([-1, -1]), pred_cls, pred_masks, gt, visible)
    assert new_obj.tolist() == [-1, 4]


def test_center_l1_cost_is_the_weighted_metric_l1_of_xyz():
    pred = InstanceData(centers=torch.tensor([[0.0, 0.0, 0.0, 9.0, 9.0, 9.0],
                                              [10.0, -2.0, 1.0, 0.0, 0.0, 0.0]]))
    # velocity columns (NaN where unknown) are not part of the cost
    gt = InstanceData(centers=torch.tensor([[1.0, 2.0, -0.5, float('nan'), 0.0, 0.0]]))
    cost = CenterL1Cost(weight=0.25)(pred, gt)
    assert cost.shape == (2, 1)
    assert torch.allclose(cost, torch.tensor([[0.25 * 3.5], [0.25 * 14.5]]))
    with pytest.raises(KeyError, match='gt_instances.centers'):
        CenterL1Cost()(pred, InstanceData(labels=torch.tensor([1])))
    with pytest.raises(ValueError, match='weight'):
        CenterL1Cost(weight=-1.0)


def test_clip_matcher_center_cost_matches_fresh_queries_to_near_objects():
    """Two fresh queries predict the same class and equally good masks for two objects of
    that class: masks alone cannot tell which query takes which object; with the centre cost
    each takes the object its predicted centre is near, also when its mask leans slightly
    to the other one. Tracked queries keep their ids whatever the centres."""
    gt_masks = [[1, 1, 0, 0], [0, 0, 1, 1]]
    gt = gt_instances(gt_masks, ids=[7, 3], labels=[1, 1],
                      centers=torch.tensor([[-20.0, 0.0, 0.0], [20.0, 0.0, 0.0]]))
    # query 0 leans to gt 0 by its mask but sits on gt 1, query 1 the other way round
    pred_masks = logits_from([[1, 1, 1, 0], [0, 1, 1, 1]], value=2.0)
    pred_cls = class_logits([1, 1])
    centers = torch.tensor([[19.0, 1.0, 0.0], [-19.5, 0.0, 0.5]])
    visible = torch.ones(4, dtype=torch.bool)
    fresh = torch.tensor([-1, -1])
    plain = ClipMatcher(num_classes=16)
    local = ClipMatcher(num_classes=16, center_cost_weight=0.25)
    assert isinstance(local.assigner.match_costs[-1], CenterL1Cost)
    assert len(plain.assigner.match_costs) == len(local.assigner.match_costs) - 1
    by_mask = plain.match_layers(fresh, [(pred_cls, pred_masks, centers)], gt, visible)[0]
    by_place = local.match_layers(fresh, [(pred_cls, pred_masks, centers)], gt, visible)[0]
    assert by_mask.obj_idxes.tolist() == [7, 3]
    assert by_place.obj_idxes.tolist() == [3, 7]
    tracked = local.match_layers(torch.tensor([7, 3]), [(pred_cls, pred_masks, centers)], gt,
                                 visible)[0]
    assert tracked.obj_idxes.tolist() == [7, 3]
    # a NaN centre (as a NaN mask) still leaves a solvable, finite cost matrix
    nan_centers = centers.clone()
    nan_centers[0, 0] = float('nan')
    nan_match = local.match_layers(fresh, [(pred_cls, pred_masks, nan_centers)], gt,
                                   visible)[0]
    assert sorted(nan_match.obj_idxes.tolist()) == [3, 7]
    # a centre cost needs the centres: the message names them
    with pytest.raises(KeyError, match='centers'):
        local.match_layers(fresh, [(pred_cls, pred_masks)], gt, visible)
    with pytest.raises(ValueError, match='center_supervise'):
        ClipMatcher(center_cost_weight=0.25, center_supervise=False)


def test_clip_matcher_losses_values_and_gradients():
    matcher = ClipMatcher(num_classes=16)
    gt_masks = [[1, 1, 0, 0], [0, 0, 1, 0]]
    centers = torch.tensor([[1.0, 2.0, 0.5, 2.0, 0.0, 0.0],
                            [3.0, 1.0, 0.5, float('nan'), float('nan'), float('nan')]])
    gt = gt_instances(gt_masks, ids=[1, 2], labels=[1, 2], centers=centers)
    mask_logits = torch.randn(3, 4, requires_grad=True)
    cls = torch.randn(3, 16, requires_grad=True)
    pred_centers = torch.zeros(3, 6, requires_grad=True)
    visible = torch.tensor([1, 1, 1, 0], dtype=torch.bool)
    src, tgt = torch.tensor([0, 2, 1]), torch.tensor([0, 1, -1])
    losses = matcher.loss(cls, mask_logits, pred_centers, gt, src, tgt, visible)
    assert set(losses) == {'loss_cls', 'loss_mask', 'loss_dice', 'loss_center'}

    # mask BCE: visible voxels, averaged over all 4 voxels, summed over the 2 pairs / 2 * 100
    pred = mask_logits[[0, 2]][:, :3]
    target = torch.tensor(gt_masks, dtype=torch.float)[:, :3]
    bce = F.binary_cross_entropy_with_logits(pred, target, reduction='sum') / 4 / 2 * 100
    assert losses['loss_mask'].item() == pytest.approx(bce.item(), rel=1e-4)
    prob = pred.sigmoid()
    dice = (1 - (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)).sum() / 2
    assert losses['loss_dice'].item() == pytest.approx(5 * dice.item(), rel=1e-4)
    # centre L1: code weights (1, 1, 1, .2, .2, .2), NaN velocity ignored, / 2 pairs * 0.075
    l1 = (1 + 2 + 0.5 + 0.2 * 2) + (3 + 1 + 0.5)
    assert losses['loss_center'].item() == pytest.approx(0.075 * l1 / 2, rel=1e-5)
    # focal class loss: all 3 queries count, disappeared query 1 is background; / 3 pairs
    labels = torch.tensor([1, 16, 2])
    onehot = F.one_hot(labels, 17)[:, :16].float()
    p = cls.sigmoid()
    pt = (1 - p) * onehot + p * (1 - onehot)
    w = (0.25 * onehot + 0.75 * (1 - onehot)) * pt.pow(2)
    focal = (F.binary_cross_entropy_with_logits(cls, onehot, reduction='none') * w).sum() / 3
    assert losses['loss_cls'].item() == pytest.approx(4 * focal.item(), rel=1e-4)

    sum(losses.values()).backward()
    assert cls.grad.abs().sum() > 0 and mask_logits.grad[:, :3].abs().sum() > 0
    assert mask_logits.grad[1].abs().sum() == 0  # the disappeared track has no mask target
    assert pred_centers.grad[0].abs().sum() > 0 and pred_centers.grad[1].abs().sum() == 0


def test_mask_pos_balance_weighs_positives_of_small_masks():
    """mask_pos_balance weighs each mask's positive voxels by max(1, b * negatives / positives)
    in the BCE (visible voxels); 0 is the reference's BCE; the dice does not change."""
    gt_masks = [[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]  # 1 and 5 positives
    gt = gt_instances(gt_masks, ids=[1, 2], labels=[1, 2], centers=torch.zeros(2, 6))
    visible = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0], dtype=torch.bool)  # 7 visible voxels
    src, tgt = torch.tensor([0, 1]), torch.tensor([0, 1])
    cls, centers = torch.zeros(2, 16), torch.zeros(2, 6)
    torch.manual_seed(0)
    logits = torch.randn(2, 8)

    def losses(balance):
        mask_logits = logits.clone().requires_grad_()
        out = ClipMatcher(num_classes=16, mask_pos_balance=balance).loss(
            cls, mask_logits, centers, gt, src, tgt, visible)
        out['loss_mask'].backward()
        return out, mask_logits.grad

    plain, plain_grad = losses(0.0)
    balanced, grad = losses(2.0)
    target = torch.tensor(gt_masks, dtype=torch.float)[:, :7]
    # mask 0: 1 positive, 6 negatives -> 12; mask 1: 5 positives, 2 negatives -> max(1, 0.8)
    weight = torch.where(target > 0, torch.tensor([[12.0], [1.0]]), torch.ones_like(target))
    bce = F.binary_cross_entropy_with_logits(logits[:, :7], target, weight,
                                             reduction='sum') / 8 / 2 * 100
    assert balanced['loss_mask'].item() == pytest.approx(bce.item(), rel=1e-5)
    assert balanced['loss_dice'].item() == pytest.approx(plain['loss_dice'].item(), rel=1e-6)
    # the single positive voxel of the small mask pulls 12x harder; the rest is unchanged
    assert grad[0, 0].item() == pytest.approx(12 * plain_grad[0, 0].item(), rel=1e-5)
    assert torch.allclose(grad[0, 1:], plain_grad[0, 1:]) and torch.allclose(grad[1],
                                                                             plain_grad[1])
    with pytest.raises(ValueError, match='mask_pos_balance must be >= 0'):
        ClipMatcher(mask_pos_balance=-1.0)


def test_clip_matcher_empty_frame_is_finite():
    matcher = ClipMatcher(num_classes=16)
    gt = InstanceData(obj_ids=torch.zeros(0, dtype=torch.long),
                      labels=torch.zeros(0, dtype=torch.long),
                      masks=torch.zeros(0, 8, dtype=torch.bool), centers=torch.zeros(0, 6))
    cls = torch.randn(4, 16, requires_grad=True)
    masks = torch.randn(4, 8, requires_grad=True)
    obj, matched, src, tgt = matcher.match(torch.full((4, ), -1), cls, masks, gt,
                                           torch.ones(8, dtype=torch.bool))
    assert obj.tolist() == [-1] * 4 and len(src) == 0
    losses = matcher.loss(cls, masks, torch.zeros(4, 6), gt, src, tgt,
                          torch.ones(8, dtype=torch.bool))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_cls'] > 0 and losses['loss_mask'] == 0
    sum(losses.values()).backward()
    assert cls.grad.abs().sum() > 0


def test_stuff_mask_loss_prefers_correct_predictions():
    loss = StuffMaskLoss(num_classes=16, thing_classes=[1, 2, 4])
    sem = torch.tensor([[13, 13, 13, 10, 10, 1, 15, 15]])
    vis = torch.ones(1, 8, dtype=torch.bool)
    good_masks = logits_from([[1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0],
                              [0] * 8])[None]
    good_cls = class_logits([13, 10, 15])[None]
    good = loss(good_cls, good_masks, sem, vis)
    assert set(good) == {'loss_stuff_cls', 'loss_stuff_mask', 'loss_stuff_dice'}
    torch.manual_seed(0)
    bad_masks = torch.randn(1, 3, 8, requires_grad=True)
    bad_cls = torch.randn(1, 3, 16, requires_grad=True)
    bad = loss(bad_cls, bad_masks, sem, vis)
    for k in good:
        assert good[k] < bad[k], k
    sum(bad.values()).backward()
    assert bad_masks.grad.abs().sum() > 0 and bad_cls.grad.abs().sum() > 0


def test_stuff_mask_pos_balance_weighs_thin_segments_only():
    """StuffMaskLoss(mask_pos_balance) weighs a small segment's positives in the BCE (as the
    things' ClipMatcher does), leaves a large segment's BCE and every dice as they were."""
    # road 13: 6 of 8 visible voxels; pole 6: 1 voxel
    sem = torch.tensor([[13, 13, 13, 13, 13, 13, 6, 15]])
    vis = torch.ones(1, 8, dtype=torch.bool)
    masks = logits_from([[1, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 0]])[None] * 0.3
    cls = class_logits([13, 6])[None]

    def run(balance):
        mask_logits = masks.clone().requires_grad_()
        out = StuffMaskLoss(num_classes=16, thing_classes=[1, 2, 4],
                            mask_pos_balance=balance)(cls, mask_logits, sem, vis)
        out['loss_stuff_mask'].backward()
        return out, mask_logits.grad[0]

    plain, plain_grad = run(0.0)
    balanced, grad = run(1.0)
    # pole: 1 positive, 7 negatives -> weight 7; road: 6 positives, 2 negatives -> 1
    assert grad[1, 6].item() == pytest.approx(7 * plain_grad[1, 6].item(), rel=1e-5)
    assert torch.allclose(grad[1, :6], plain_grad[1, :6]) and torch.allclose(grad[0],
                                                                             plain_grad[0])
    assert balanced['loss_stuff_mask'] > plain['loss_stuff_mask']
    assert balanced['loss_stuff_dice'].item() == pytest.approx(
        plain['loss_stuff_dice'].item(), rel=1e-6)
    with pytest.raises(ValueError, match='mask_pos_balance must be >= 0'):
        StuffMaskLoss(mask_pos_balance=-0.1)
