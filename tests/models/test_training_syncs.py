"""Host-device synchronisations of one training step (issue 16 item 3), counted on CPU.

On CUDA the host waits for the device at ``.item()``, ``.cpu()``, ``.tolist()``,
``.numpy()``, ``bool(t)``, ``torch.nonzero``, bool-mask indexing, ``torch.unique``,
``masked_select``, matrix inverses (their singularity check) and host-to-device copies of
Python values (``new_tensor``, ``torch.tensor``). Those calls are counted here while the
tiny detector computes the losses of one 3-frame clip and runs the backward pass (the
counting wraps the Python entry points only inside the test). The bound is what the
sync-reduced matching, targets, trackers, geometry and losses reach (see
``MAX_SYNCS_PER_STEP``). mmcv's CUDA focal loss reads ``labels.max()`` in C++ (not counted
here); the losses give it one-hot targets, which mmdet computes in PyTorch.
"""
import contextlib
import functools
import math
from collections import Counter
from unittest import mock

import pytest
import torch
from torch.overrides import TorchFunctionMode
from mmengine.structures import BaseDataElement, InstanceData

from host_reads import no_device_waits
from test_detector import PC_RANGE, build, images, make_clip, make_frame, tiny_cfg
from test_view_transformer import _aug, _cam_params, _forward_camera, _tiny_vt
from trackocc.models.losses import (ClipMatcher, StuffMaskLoss, build_thing_targets,
                                    stuff_targets)
from trackocc.models.losses.host_counts import HostCountChecks
from trackocc.models.losses.mask_losses import visible_index
from trackocc.models.losses.thing_targets import VELOCITY_SOURCES, voxel_centers
from trackocc.models.trackers import relative_ego_transform
from trackocc.structures.occ_voxel_counts import (COUNTED_FIELDS, VOXEL_COUNTS_KEY,
                                                  occupancy_voxel_counts)
from trackocc.ops import voxel_pooling_prepare

# Counted calls per tiny-config training step (1 clip of 3 frames; the second step of a
# model) by decoder layers: 50 with 1 layer with the query interaction's rows taken from
# the matching (its active count no longer read back; 43 -> 41 with the ground truth's
# voxel counts, test_voxel_counts_of_the_ground_truth_replace_three_waits_a_frame, whose
# random drop, drawn on the host now, still calls nonzero on a host tensor); 52 / 70 with
# the feature networks once per clip
# (clip_feature_batch: their reads of sizes, e.g. bev_pool's point count and the spatial
# cross-attention's padded length, once per clip: `tolist` 15 -> 9, `int` 19 -> 11 with 1
# layer); 66 / 84 with each frame's visible-voxel indices computed once for
# the stuff and thing losses; 69 / 87 with the sync-free view-transformer geometry, depth,
# semantic and centre losses and the one-sync voxel_pooling_prepare; 117 / 141 counted the
# same way before them (commit 43ef8fb); 214 / 420 before the sync-reduced matching, targets
# and trackers (commit 8f065ce, counted with nested calls). The margin covers data-dependent
# paths (random drop, false positives, memory rows) that float rounding on another CPU
# could change.
MAX_SYNCS_PER_STEP = {1: 60, 3: 78}


def _is_bool_mask(item) -> bool:
    items = item if isinstance(item, tuple) else (item, )
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class _BoolGetitemCounter(TorchFunctionMode):
    """Counts ``tensor[bool mask]`` as ``bool_getitem`` in ``counts``."""

    def __init__(self, counts):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__ and len(args) > 1 and _is_bool_mask(args[1]):
            self.counts['bool_getitem'] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_syncs():
    """Count the calls that synchronise the host with a CUDA device, by kind."""
    counts = Counter()
    active = []  # a counted call in progress: calls it makes itself are not counted again

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            if active:
                return fn(*args, **kwargs)
            counts[name] += 1
            active.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                active.pop()
        return wrapper

    def counting_index(name, fn):
        def wrapper(self, item, *args):
            if _is_bool_mask(item):
                counts[name] += 1
            return fn(self, item, *args)
        return wrapper

    T = torch.Tensor
    patches = [mock.patch.object(T, m, counting(m, getattr(T, m)))
               for m in ('item', 'cpu', 'tolist', 'numpy', 'nonzero', '__bool__', '__int__',
                         '__float__', 'new_tensor', 'masked_select', 'unique')]
    # __getitem__ is observed with a TorchFunctionMode, not patched: replacing it on the class
    # leaves CPython's sequence slot set after the restore, and torch.tensor([0-d tensors])
    # then fails in every later test of the process
    patches += [mock.patch.object(T, '__setitem__',
                                  counting_index('bool_setitem', T.__setitem__)),
                _BoolGetitemCounter(counts)]
    patches += [mock.patch.object(torch, m, counting(f'torch.{m}', getattr(torch, m)))
                for m in ('nonzero', 'unique', 'masked_select', 'tensor', 'inverse')]
    # matrix inverses check for singular input on the host (linalg.inv_ex does not)
    patches += [mock.patch.object(T, 'inverse', counting('inverse', T.inverse)),
                mock.patch.object(torch.linalg, 'inv', counting('torch.linalg.inv',
                                                                torch.linalg.inv))]
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield counts


def one_step_losses(model, clip, imgs):
    losses = model.loss(dict(imgs=imgs), [clip])
    sum(losses.values()).backward()
    return losses


@pytest.mark.parametrize('num_layers', [1, 3])
def test_training_step_sync_count_is_bounded(num_layers):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg['pts_bbox_head']['decoder']['num_layers'] = num_layers
    cfg['clip_feature_batch'] = True  # what a GPU runs by default
    model = build(cfg).train()
    frames = [make_frame(t, start=(t == 0)) for t in range(3)]
    imgs = images(1, 3, seed=5)
    clip = make_clip(frames)
    one_step_losses(model, clip, imgs)  # first step: cached device constants are made
    with count_syncs() as counts:
        one_step_losses(model, clip, imgs)
    total = sum(counts.values())
    assert total <= MAX_SYNCS_PER_STEP[num_layers], dict(counts)
    # the matching of a frame copies its costs to the host once (things, and stuff), for
    # all decoder layers together
    assert counts['cpu'] <= 2 * len(frames), dict(counts)


def test_no_host_read_before_the_image_encoder_runs():
    """A training step's first wait for the device comes after the image encoder's launch
    (then bev_pool's point count), not in the ground truth's targets: with no wait at the end
    of an iteration, the host prepares the next one while the device finishes the last."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg['clip_feature_batch'] = True  # what a GPU runs by default
    model = build(cfg).train()
    clip = make_clip([make_frame(t, start=(t == 0)) for t in range(3)])
    imgs = images(1, 3, seed=5)
    one_step_losses(model, clip, imgs)
    seen = []
    handle = model.img_backbone.register_forward_pre_hook(
        lambda module, args: seen.append(sum(counts.values())))
    try:
        with count_syncs() as counts:
            one_step_losses(model, clip, imgs)
    finally:
        handle.remove()
    assert seen == [0] and sum(counts.values()) > 0, (seen, dict(counts))


def _counted(frame):
    """``frame`` with its ground truth's voxel counts in the metainfo, as
    PackTrackOccInputs packs them."""
    gt = frame.gt_occ
    gt.set_metainfo({VOXEL_COUNTS_KEY: occupancy_voxel_counts(
        *(getattr(gt, k).numpy() for k in COUNTED_FIELDS))})
    return frame


def _step(model, frames, imgs):
    """Losses, gradients and counted synchronisations of the second training step."""
    clip = make_clip(frames)
    model.zero_grad()
    torch.manual_seed(1)
    one_step_losses(model, clip, imgs)
    model.zero_grad()
    torch.manual_seed(1)
    with count_syncs() as counts:
        losses = one_step_losses(model, clip, imgs)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads, counts


def test_voxel_counts_of_the_ground_truth_replace_three_waits_a_frame():
    """With the ground truth's voxel counts (packed in the loader's workers) the visible
    voxels' indices, the stuff targets' classes and the instances with a voxel need no
    ``nonzero``: 3 waits a frame fewer, the same losses and gradients."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg['clip_feature_batch'] = True
    model = build(cfg).train()
    imgs = images(1, 3, seed=5)
    plain = _step(model, [make_frame(t, start=(t == 0)) for t in range(3)], imgs)
    counted = _step(model, [_counted(make_frame(t, start=(t == 0))) for t in range(3)], imgs)
    assert plain[0].keys() == counted[0].keys()
    for key in plain[0]:
        torch.testing.assert_close(counted[0][key], plain[0][key], rtol=0, atol=0, msg=key)
    assert plain[1].keys() == counted[1].keys()
    for name in plain[1]:
        torch.testing.assert_close(counted[1][name], plain[1][name], rtol=0, atol=0, msg=name)
    assert counted[2]['torch.nonzero'] == plain[2]['torch.nonzero'] - 3 * 3, \
        (dict(plain[2]), dict(counted[2]))
    assert sum(counted[2].values()) == sum(plain[2].values()) - 3 * 3
    assert counted[2]['__bool__'] == plain[2]['__bool__']  # the checks ride on the loss check
    model.use_gt_voxel_counts = False  # the counts are there, and not used
    unused = _step(model, [_counted(make_frame(t, start=(t == 0))) for t in range(3)], imgs)
    assert unused[2] == plain[2]


@pytest.mark.parametrize('what, change', [
    ('visible voxels of frame 1', lambda c: c['visible'].update(
        {rule: n - 1 for rule, n in c['visible'].items()})),
    ('stuff classes', lambda c: c['classes'].update(dict.fromkeys(c['classes'], (0, 13)))),
    ('instance_voxels of frame 2', lambda c: c.update(instance_voxels=(6, 0))),
])
def test_voxel_counts_that_disagree_with_the_ground_truth_are_refused(what, change):
    torch.manual_seed(0)
    model = build(tiny_cfg()).train()
    frames = [_counted(make_frame(t, start=(t == 0))) for t in range(3)]
    frame = frames[2 if what.endswith('frame 2') else 1]
    change(frame.gt_occ.metainfo[VOXEL_COUNTS_KEY])
    with pytest.raises(ValueError, match=f'voxel_counts .* disagree .*{what}'):
        model.loss(dict(imgs=images(1, 3, seed=5)), [make_clip(frames)])


def test_voxel_counts_of_another_shape_are_refused_naming_the_sample():
    model = build(tiny_cfg()).train()
    frames = [_counted(make_frame(t, start=(t == 0))) for t in range(3)]
    frames[0].gt_occ.metainfo[VOXEL_COUNTS_KEY]['instance_voxels'] = (1, )
    with pytest.raises(ValueError, match=r'sample 0\).*1 instance_voxels for 2 instance_ids'):
        model.loss(dict(imgs=images(1, 3, seed=5)), [make_clip(frames)])


# -- the sync-reduced functions against their former loop / mask forms ------------------
def _reference_match(matcher, obj_idxes, cls_logits, mask_logits, gt, visible):
    """The former per-layer matching: bool masks, nonzero and mmdet's assigner per call."""
    tracked = obj_idxes >= 0
    eq = obj_idxes[:, None] == gt.obj_ids[None]
    gt_idx = torch.where(tracked & eq.any(1), eq.float().argmax(1) if eq.numel() else
                         torch.zeros_like(obj_idxes), torch.full_like(obj_idxes, -1))
    prev_src = torch.nonzero(tracked).squeeze(1)
    prev_tgt = gt_idx[prev_src]
    free = torch.nonzero(obj_idxes == -1).squeeze(1)
    untracked = torch.ones(len(gt), dtype=torch.bool)
    untracked[gt_idx[gt_idx >= 0]] = False
    untracked = torch.nonzero(untracked).squeeze(1)
    new_src = new_tgt = torch.zeros(0, dtype=torch.long)
    if len(free) and len(untracked):
        pred = InstanceData(scores=cls_logits[free], masks=mask_logits[free][:, visible])
        target = InstanceData(labels=gt.labels[untracked], masks=gt.masks[untracked][:, visible])
        inds = matcher.assigner.assign(pred, target,
                                       img_meta=dict(num_voxels=mask_logits.shape[1])).gt_inds
        new_src, new_tgt = free[inds > 0], untracked[inds[inds > 0] - 1]
    new_obj = obj_idxes.clone()
    new_obj[new_src] = gt.obj_ids[new_tgt]
    gt_idx[new_src] = new_tgt
    return new_obj, gt_idx, torch.cat([new_src, prev_src]), torch.cat([new_tgt, prev_tgt])


def _random_frame(gen, num_queries=12, num_gts=5, num_voxels=40, num_layers=3):
    gt_ids = torch.randperm(50, generator=gen)[:num_gts] + 3
    masks = torch.rand(num_gts, num_voxels, generator=gen) < 0.3
    gt = InstanceData(obj_ids=gt_ids, labels=torch.randint(0, 16, (num_gts, ), generator=gen),
                      masks=masks, centers=torch.randn(num_gts, 6, generator=gen))
    gt.centers[:1, 3:] = float('nan')  # no velocity target
    obj = torch.full((num_queries, ), -1)
    obj[4] = 99  # a track whose gt is gone
    if num_gts >= 3:
        obj[1], obj[7] = gt_ids[2], gt_ids[0]  # tracks whose gt is present
    layers = [(torch.randn(num_queries, 16, generator=gen),
               torch.randn(num_queries, num_voxels, generator=gen) * 3)
              for _ in range(num_layers)]
    visible = torch.rand(num_voxels, generator=gen) < 0.8
    return obj, layers, gt, visible


def test_a_started_match_gives_the_same_matches_and_its_shape_is_checked():
    matcher = ClipMatcher(num_classes=16)
    obj, layers, gt, visible = _random_frame(torch.Generator().manual_seed(4))
    started = matcher.start_match(obj, layers, gt, visible)
    later = matcher.match_layers(obj, layers, gt, visible, started)
    at_once = matcher.match_layers(obj, layers, gt, visible)
    for a, b in zip(later, at_once):
        assert all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
                   for x, y in zip(a, b))
        # the carried rows: the queries holding an id after the matching, then the others
        assert torch.equal(a.active_index, torch.nonzero(a.obj_idxes >= 0)[:, 0])
        assert torch.equal(a.inactive_index, torch.nonzero(a.obj_idxes < 0)[:, 0])
    with pytest.raises(ValueError, match=r'started for \(queries, gts, layers\) \(12, 5, 3\)'
                                         r', called with \(12, 5, 1\)'):
        matcher.match_layers(obj, layers[:1], gt, visible, started)


def test_match_layers_and_losses_equal_the_former_per_layer_form():
    matcher = ClipMatcher(num_classes=16)
    gen = torch.Generator().manual_seed(3)
    for num_gts in (5, 0, 14):
        obj, layers, gt, visible = _random_frame(gen, num_gts=num_gts)
        matches = matcher.match_layers(obj, layers, gt, torch.nonzero(visible).squeeze(1))
        assert len(matches) == len(layers)
        for (cls, masks), match in zip(layers, matches):
            ref_obj, ref_matched, ref_src, ref_tgt = _reference_match(matcher, obj, cls,
                                                                      masks, gt, visible)
            assert torch.equal(match.obj_idxes, ref_obj)
            assert torch.equal(match.matched_gt_idxes, ref_matched)
            assert sorted(zip(match.src.tolist(), match.tgt.tolist())) == \
                sorted(zip(ref_src.tolist(), ref_tgt.tolist()))
            assert (match.tgt[:match.num_present] >= 0).all()
            assert (match.tgt[match.num_present:] < 0).all()
            centers = torch.randn(len(obj), 6, generator=gen)
            new = matcher.loss(cls, masks, centers, gt, match.src, match.tgt,
                               torch.nonzero(visible).squeeze(1), match.num_present)
            ref = matcher.loss(cls, masks, centers, gt, ref_src, ref_tgt, visible)
            assert new.keys() == ref.keys()
            for k in ref:
                torch.testing.assert_close(new[k], ref[k], rtol=1e-6, atol=0, msg=k)
        # match() is match_layers of one layer
        assert all(torch.equal(a, b) for a, b in zip(
            matcher.match(obj, *layers[0], gt, visible), matches[0][:4]))


def test_stuff_targets_equal_the_former_unique_form():
    gen = torch.Generator().manual_seed(0)
    sem = torch.randint(-2, 18, (500, ), generator=gen)
    sem[::7] = 255
    visible = torch.rand(500, generator=gen) < 0.6
    labels, masks = stuff_targets(sem, visible, 16, [1, 2, 4])
    present = torch.unique(sem[visible])
    ref = present[(present >= 0) & (present < 16) & ~torch.isin(present, torch.tensor(
        [15, 1, 2, 4]))].long()
    assert torch.equal(labels, ref)
    assert torch.equal(masks, (sem[None] == ref[:, None]) & visible[None])
    # the classes from the host's counts (negative ids and 255 among them): the same
    # targets, and a check that holds
    checks = HostCountChecks()
    host = stuff_targets(sem, visible, 16, [1, 2, 4], present=present.tolist(), checks=checks)
    assert torch.equal(host[0], labels) and torch.equal(host[1], masks)
    assert len(checks) == 1 and bool(checks.flags().all())


def test_thing_targets_from_the_counts_equal_the_device_form():
    """An instance listed without a voxel is dropped by both forms."""
    frames = [_counted(make_frame(t, start=(t == 0))) for t in range(2)]
    gt = frames[1].gt_occ
    gt.instance_ids = torch.tensor([11, 30, 12])  # 30 has no voxel
    gt.instance_labels = torch.tensor([1, 2, 2])
    gt.set_metainfo({VOXEL_COUNTS_KEY: occupancy_voxel_counts(
        *(getattr(gt, k).numpy() for k in COUNTED_FIELDS))})
    assert gt.metainfo[VOXEL_COUNTS_KEY]['instance_voxels'][1] == 0
    ego = [f.metainfo['ego2global'] for f in frames]
    checks = HostCountChecks()
    with count_syncs() as counts:
        host = build_thing_targets([f.gt_occ for f in frames], ego, PC_RANGE, checks=checks)
    device = build_thing_targets([f.gt_occ for f in frames], ego, PC_RANGE)
    assert counts['torch.nonzero'] == 0 and len(checks) == 2 and bool(checks.flags().all())
    assert [t.obj_ids.tolist() for t in host] == [[11, 12], [11, 12]]
    for a, b in zip(host, device):
        for key in ('obj_ids', 'labels', 'masks', 'centers'):
            torch.testing.assert_close(a.get(key), b.get(key), rtol=0, atol=0, equal_nan=True)


def test_thing_target_velocities_equal_the_former_masked_form():
    gen = torch.Generator().manual_seed(1)
    shape = (6, 5, 2)
    pc_range = [-3.0, -2.5, -1.0, 3.0, 2.5, 1.0]
    frames = []
    for t in range(3):
        inst = torch.randint(0, 6, shape, generator=gen)
        inst[inst == t] = 0  # an id that leaves, one that is listed without a voxel
        frames.append(BaseDataElement(instances=inst, instance_ids=torch.tensor([1, 2, 3, 4, 9]),
                                      instance_labels=torch.tensor([1, 2, 4, 1, 2])))
    poses = []
    for t in range(3):
        pose = torch.eye(4, dtype=torch.float64)
        pose[:3, 3] = torch.tensor([0.3 * t, 0.1 * t, 0.0])
        c, s = math.cos(0.1 * t), math.sin(0.1 * t)
        pose[:2, :2] = torch.tensor([[c, -s], [s, c]])
        poses.append(pose.numpy())
    coords = voxel_centers(shape, pc_range)
    for source in VELOCITY_SOURCES:
        targets = build_thing_targets(frames, poses, pc_range, 0.5, True, source)
        for t, tgt in enumerate(targets):
            ids = tgt.obj_ids
            assert torch.equal(ids, torch.tensor([i for i in [1, 2, 3, 4, 9]
                                                  if (frames[t].instances == i).any()]))
            want = torch.full((len(ids), 3), float('nan'))
            if t + 1 < len(targets):
                nxt = frames[t + 1].instances.reshape(-1)
                listed = targets[t + 1].obj_ids
                for k, i in enumerate(ids.tolist()):
                    on = nxt == i
                    if not on.any() or (source == 'instance_table' and i not in listed):
                        continue
                    centroid = coords[on].mean(0)
                    rel = relative_ego_transform(poses[t + 1], poses[t]).float()
                    moved = centroid @ rel[:3, :3].T + rel[:3, 3]
                    want[k] = (moved - tgt.centers[k, :3]) / 0.5
            torch.testing.assert_close(tgt.centers[:, 3:], want, rtol=1e-5, atol=1e-5,
                                       equal_nan=True)


def test_distributed_avg_factors_stay_on_the_device_and_give_the_same_losses():
    """Under DDP the counts are all-reduced tensors that are never read back on the host."""
    matcher = ClipMatcher(num_classes=16)
    obj, layers, gt, visible = _random_frame(torch.Generator().manual_seed(5))
    match = matcher.match_layers(obj, layers, gt, visible)[-1]
    args = (*layers[-1], torch.randn(len(obj), 6), gt, match.src, match.tgt, visible,
            match.num_present)
    single = matcher.loss(*args)
    with mock.patch('trackocc.models.losses.mask_losses.is_distributed', return_value=True), \
            mock.patch('trackocc.models.losses.mask_losses.reduce_mean',
                       side_effect=lambda t: t.clone()) as reduce, count_syncs() as counts:
        ddp = matcher.loss(*args)
    assert reduce.call_count == 2 and counts['item'] == 0, dict(counts)
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-6, atol=0, msg=k)
        assert ddp[k].shape == single[k].shape


def test_stuff_loss_of_all_layers_equals_the_former_per_layer_form():
    loss = StuffMaskLoss(num_classes=16, thing_classes=[1, 2, 4])
    gen = torch.Generator().manual_seed(2)
    sem = torch.randint(0, 16, (2, 60), generator=gen)
    sem[1] = 15  # a sample without stuff segments
    visible = torch.rand(2, 60, generator=gen) < 0.7
    cls = [torch.randn(2, 5, 16, generator=gen) for _ in range(3)]
    masks = [torch.randn(2, 5, 60, generator=gen) * 2 for _ in range(3)]
    layers = loss.forward_layers(cls, masks, sem, visible)
    targets = [stuff_targets(sem[b], visible[b], 16, [1, 2, 4]) for b in range(2)]
    avg = float(max(1, sum(len(t[0]) for t in targets)))
    for lid, layer in enumerate(layers):
        ref = dict(loss_stuff_cls=0, loss_stuff_mask=0, loss_stuff_dice=0)
        for b, (labels, gt_masks) in enumerate(targets):
            src = tgt = torch.zeros(0, dtype=torch.long)
            if len(labels):
                pred = InstanceData(scores=cls[lid][b], masks=masks[lid][b][:, visible[b]])
                gt = InstanceData(labels=labels, masks=gt_masks[:, visible[b]])
                inds = loss.assigner.assign(pred, gt, img_meta=dict(num_voxels=60)).gt_inds
                src, tgt = torch.nonzero(inds > 0).squeeze(1), inds[inds > 0] - 1
            target = torch.full((5, ), 15)
            target[src] = labels[tgt]
            ref['loss_stuff_cls'] += loss.loss_cls(cls[lid][b], target, avg_factor=avg)
            if len(src):
                pred, gt = masks[lid][b][src][:, visible[b]], gt_masks[tgt][:, visible[b]]
                ref['loss_stuff_mask'] += loss.loss_mask(pred, gt.float(),
                                                         avg_factor=avg * 60)
                ref['loss_stuff_dice'] += loss.loss_dice(pred, gt.float(), avg_factor=avg)
        for k, v in ref.items():
            torch.testing.assert_close(layer[k], torch.as_tensor(v, dtype=torch.float32),
                                       rtol=1e-6, atol=1e-7, msg=k)
        single = loss(cls[lid], masks[lid], sem, visible)
        assert all(torch.equal(single[k], layer[k]) for k in single)
    # the visible indices given by the caller (the detector computes them once per frame)
    given = loss.forward_layers(cls, masks, sem, visible,
                                [torch.nonzero(v, as_tuple=True)[0] for v in visible])
    for layer, same in zip(layers, given):
        assert all(torch.equal(layer[k], same[k]) for k in layer)
    with pytest.raises(ValueError, match='1 visible_idx for 2 samples'):
        loss.forward_layers(cls, masks, sem, visible, [torch.arange(3)])


def test_view_transformer_geometry_and_losses_do_not_sync():
    """Frustum geometry, depth loss: no host read; the pooling ranks: one (the counts)."""
    vt = _tiny_vt()
    params = _cam_params([_forward_camera(50., 128., 32.)] * 2, [_aug(), _aug(0.5, 4., 2.)])
    gt = torch.zeros(1, 2, 64, 256)
    gt[0, :, 10:20, 30:200] = 12.0
    depth = torch.rand(2, 80, 4, 16).softmax(1)
    coords = vt.get_ego_coords(**params)
    for bounds in ((vt.grid_lower_bound, vt.grid_interval),  # buffers (tensors)
                   ((-40.0, -40.0, -1.0), (0.4, 0.4, 0.4))):  # host values
        voxel_pooling_prepare(coords, *bounds, vt.grid_size)  # device constants made
        with count_syncs() as counts:
            ranks = voxel_pooling_prepare(coords, *bounds, vt.grid_size)
        assert dict(counts) == {'tolist': 1} and ranks.ranks_bev.numel() > 0
    with count_syncs() as counts:
        vt.get_ego_coords(**params)
        loss = vt.get_depth_loss(gt, depth)
    assert sum(counts.values()) == 0 and loss > 0, dict(counts)


@pytest.mark.parametrize('case', ['some_nan', 'all_nan', 'no_pair'])
def test_center_loss_equals_mmdet_weighted_l1_without_host_check(case):
    """Weights applied after mmdet's L1 loss (weight=None): no ``any(weight > 0)`` on the
    host, the same loss and gradient as mmdet's weighted L1Loss."""
    matcher = ClipMatcher(num_classes=16)
    gen = torch.Generator().manual_seed(8)
    obj, layers, gt, visible = _random_frame(gen, num_gts=0 if case == 'no_pair' else 5)
    if case == 'all_nan':  # every weight is 0 (mmdet's early return)
        gt.centers[:] = float('nan')
    match = matcher.match_layers(obj, layers, gt, torch.nonzero(visible).squeeze(1))[-1]
    centers = torch.randn(len(obj), 6, generator=gen, requires_grad=True)
    with count_syncs() as counts:
        new = matcher.loss(*layers[-1], centers, gt, match.src, match.tgt,
                           torch.nonzero(visible).squeeze(1), match.num_present)
    assert counts['__bool__'] == 0, dict(counts)
    src, tgt = match.src[:match.num_present], match.tgt[:match.num_present]
    target = gt.centers[tgt]
    weights = matcher.code_weights.expand_as(target).clone()
    weights.masked_fill_(torch.isnan(target), 0)
    ref = matcher.loss_center(centers[src], torch.nan_to_num(target, nan=0.0), weights,
                              avg_factor=max(1, len(src)))
    (grad_new, ) = torch.autograd.grad(new['loss_center'], centers)
    (grad_ref, ) = torch.autograd.grad(ref, centers)
    torch.testing.assert_close(new['loss_center'], ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad_new, grad_ref, rtol=1e-6, atol=1e-9)
    assert (new['loss_center'] > 0) == (case == 'some_nan')


def test_focal_class_losses_take_one_hot_targets_and_give_the_same_losses():
    """Thing and stuff class losses hand mmdet's FocalLoss one-hot targets, which it takes
    to its PyTorch form on any device instead of mmcv's CUDA kernel (a host read of
    ``labels.max()``); on CPU mmdet builds that one-hot form itself from class indices, so
    the losses equal the former ones bit for bit."""
    matcher = ClipMatcher(num_classes=16, center_supervise=False)
    stuff = StuffMaskLoss(num_classes=16, thing_classes=[1, 2, 4])
    gen = torch.Generator().manual_seed(9)
    obj, layers, gt, visible = _random_frame(gen)
    match = matcher.match_layers(obj, layers, gt, visible)[-1]
    sem = torch.randint(0, 16, (2, 60), generator=gen)
    vis = torch.rand(2, 60, generator=gen) < 0.7
    cls, masks = torch.randn(2, 5, 16, generator=gen), torch.randn(2, 5, 60, generator=gen)
    target_dims = []

    def recording(forward, pred, target, **kwargs):
        target_dims.append(target.dim())
        return forward(pred, target, **kwargs)

    for module in (matcher.loss_cls, stuff.loss_cls):
        module.forward = functools.partial(recording, module.forward)

    def class_losses():
        thing = matcher.loss(*layers[-1], None, gt, match.src, match.tgt, visible,
                             match.num_present)['loss_cls']
        return thing, stuff(cls, masks, sem, vis)['loss_stuff_cls']

    new = class_losses()
    assert target_dims == [2] * 3  # one thing loss, two stuff samples
    with mock.patch('trackocc.models.losses.mask_losses.FocalLoss', type(None)):
        former = class_losses()  # class indices, as before
    assert target_dims[3:] == [1] * 3
    assert all(torch.equal(a, b) for a, b in zip(new, former)) and all(v > 0 for v in new)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_targets_from_voxel_counts_do_not_wait_for_the_gpu():
    """On CUDA the visible indices, the thing targets and the stuff targets sized by the
    voxel counts run under ``set_sync_debug_mode('error')`` and equal the CPU's."""
    frames = [_counted(make_frame(t, start=(t == 0))) for t in range(3)]
    ego = [f.metainfo['ego2global'] for f in frames]
    counts = [f.gt_occ.metainfo[VOXEL_COUNTS_KEY] for f in frames]

    def run(gts):
        checks = HostCountChecks()
        things = build_thing_targets(gts, ego, PC_RANGE, checks=checks)
        out = []
        for gt, c in zip(gts, counts):
            visible = gt.mask_camera.reshape(-1)
            idx = visible_index(visible, c['visible']['camera'])
            checks.add('visible', visible.sum() == c['visible']['camera'])
            out.append((idx, stuff_targets(gt.semantics.reshape(-1), visible, 16, (1, 2, 4),
                                           present=c['classes']['camera'], checks=checks)))
        return things, out, checks.flags()

    cpu = run([f.gt_occ for f in frames])
    gts = [f.gt_occ.to('cuda') for f in frames]
    run(gts)  # first call: cached device constants and pinned buffers
    with no_device_waits():
        gpu = run(gts)
    assert bool(gpu[2].all()) and bool(cpu[2].all())
    for a, b in zip(cpu[0], gpu[0]):
        for key in ('obj_ids', 'labels', 'masks'):
            assert torch.equal(a.get(key), b.get(key).cpu()), key
        torch.testing.assert_close(a.centers, b.centers.cpu(), equal_nan=True)
    for (idx_a, (lab_a, m_a)), (idx_b, (lab_b, m_b)) in zip(cpu[1], gpu[1]):
        assert torch.equal(idx_a, idx_b.cpu()) and torch.equal(lab_a, lab_b.cpu())
        assert torch.equal(m_a, m_b.cpu())


def test_a_frame_waits_once_for_its_stuff_and_thing_matchings(monkeypatch):
    """The thing matching's copy to the host is started (no wait) before the stuff matching
    reads its costs, and read after it: on a GPU the stuff read waits for both, and the
    thing read finds its copy done (one wait a frame instead of two)."""
    from trackocc.utils.host_copy import HostCopy
    log = []
    start, read, match = HostCopy.__init__, HostCopy.result, StuffMaskLoss._match

    def logged(name, fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            log.append(name)
            return out
        return wrapper

    monkeypatch.setattr(HostCopy, '__init__', logged('thing copy started', start))
    monkeypatch.setattr(HostCopy, 'result', logged('thing copy read', read))
    monkeypatch.setattr(StuffMaskLoss, '_match', logged('stuff costs read', match))
    torch.manual_seed(0)
    model = build(tiny_cfg()).train()
    model.loss(dict(imgs=images(1, 3, seed=5)),
               [make_clip([make_frame(t, start=(t == 0)) for t in range(3)])])
    assert log == ['thing copy started', 'stuff costs read', 'thing copy read'] * 3, log
