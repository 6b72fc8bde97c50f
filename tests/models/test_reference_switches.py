"""TrackOcc switches between the original's behaviour and ours, each checked where it acts:
training visibility, velocity-target source, mixed-precision scope, inference track alignment;
and the original's init of the reference-point refinement branches."""
import math
import os.path as osp

import pytest
import torch

import trackocc.models.detectors.clip_training as training_module
from trackocc.registry import MODELS
from trackocc.models.trackers import align_ref_points, build_empty_tracks

from repo_files import load_module


def _detector_helpers():
    """The tiny detector and its frames of tests/models/test_detector.py."""
    path = osp.join(osp.dirname(__file__), 'test_detector.py')
    return load_module(path, '_tiny_detector_helpers_switches')


_h = _detector_helpers()


@pytest.fixture(scope='module')
def model():
    return _h.build()


def _frame_with_partial_infov():
    frame = _h.make_frame(0)
    gen = torch.Generator().manual_seed(3)
    frame.gt_occ.infov = torch.rand(_h.OCC, generator=gen) > 0.3
    return frame


def _spy_loss(model, monkeypatch, **switches):
    """One training frame under bf16 autocast; what the losses and targets received."""
    seen = {}
    head_loss = model.pts_bbox_head.loss

    def loss(outs, semantics, visible, visible_idx=None, *host_counts):
        seen.update(visible=visible[0].clone(), stuff_dtype=outs['stuff_cls'][-1].dtype,
                    autocast_in_loss=torch.is_autocast_enabled('cpu'))
        # the detector's indices of the same voxels
        assert torch.equal(visible_idx[0], torch.nonzero(visible[0].reshape(-1))[:, 0])
        return head_loss(outs, semantics, visible, visible_idx, *host_counts)

    targets = training_module.build_thing_targets

    def thing_targets(*args):
        seen['velocity_source'] = args[5]
        return targets(*args)

    def backbone_hook(module, args, out):
        seen['autocast_in_backbone'] = torch.is_autocast_enabled('cpu')

    monkeypatch.setattr(model.pts_bbox_head, 'loss', loss)
    monkeypatch.setattr(training_module, 'build_thing_targets', thing_targets)
    for name, value in switches.items():
        monkeypatch.setattr(model, name, value)
    frame = _frame_with_partial_infov()
    handle = model.img_backbone.register_forward_hook(backbone_hook)
    try:
        model.train()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            losses = model.loss(dict(imgs=_h.images(1, 1)), [_h.make_clip([frame])])
    finally:
        handle.remove()
        monkeypatch.undo()
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    return seen, frame.gt_occ


def test_reference_training_switches(model, monkeypatch):
    """Defaults (the original): mask_camera & infov, velocity from any voxel, AMP only in
    the encoder / head regions (the losses run outside autocast on float32 outputs)."""
    assert (model.train_visibility, model.velocity_source, model.autocast_scope) == \
        ('camera_and_infov', 'any_voxel', 'reference')
    seen, gt = _spy_loss(model, monkeypatch)
    want = gt.mask_camera & gt.infov
    assert bool((gt.mask_camera & ~gt.infov).any())  # the two choices differ on this frame
    assert torch.equal(seen['visible'], want)
    assert seen['velocity_source'] == 'any_voxel'
    assert seen['autocast_in_backbone'] and not seen['autocast_in_loss']
    assert seen['stuff_dtype'] == torch.float32


def test_our_training_switches(model, monkeypatch):
    seen, gt = _spy_loss(model, monkeypatch, train_visibility='camera',
                         velocity_source='instance_table', autocast_scope='all')
    assert torch.equal(seen['visible'], gt.mask_camera)
    assert seen['velocity_source'] == 'instance_table'
    assert seen['autocast_in_backbone'] and seen['autocast_in_loss']
    assert seen['stuff_dtype'] == torch.bfloat16


def test_switch_values_are_checked():
    for name in ('train_visibility', 'velocity_source', 'autocast_scope', 'track_alignment'):
        with pytest.raises(ValueError, match=name):
            MODELS.build(dict(_h.tiny_cfg(), **{name: 'nope'}))


def test_velocity_target_sources():
    """An instance that has voxels at t+1 but no visible one (absent from t+1's table)."""
    from mmengine.structures import BaseDataElement

    from trackocc.models.losses import build_thing_targets
    occ = (4, 4, 2)
    inst0 = torch.zeros(occ, dtype=torch.long)
    inst0[0, 0, 0] = 5
    inst1 = torch.zeros(occ, dtype=torch.long)
    inst1[2, 0, 0] = 5
    f0 = BaseDataElement(instances=inst0, instance_ids=torch.tensor([5]),
                         instance_labels=torch.tensor([1]))
    f1 = BaseDataElement(instances=inst1, instance_ids=torch.tensor([], dtype=torch.long),
                         instance_labels=torch.tensor([], dtype=torch.long))
    poses = [torch.eye(4).tolist()] * 2
    pc_range = [0.0, 0.0, 0.0, 4.0, 4.0, 2.0]
    any_voxel = build_thing_targets([f0, f1], poses, pc_range, 0.5)
    assert any_voxel[0].centers[0, 3:].tolist() == pytest.approx([4.0, 0.0, 0.0])
    table = build_thing_targets([f0, f1], poses, pc_range, 0.5,
                                velocity_source='instance_table')
    assert torch.isnan(table[0].centers[0, 3:]).all()
    with pytest.raises(ValueError, match='velocity_source'):
        build_thing_targets([f0, f1], poses, pc_range, 0.5, velocity_source='visible')


def _tracks(model):
    gen = torch.Generator().manual_seed(1)
    q = model.query_embedding.weight.detach()[:5]
    tracks = build_empty_tracks(q, torch.randn(5, 3, generator=gen) * 0.5, 16, 6, 4)
    tracks.obj_idxes = torch.tensor([-1, 0, 2, -1, 1])
    tracks.pred_centers = torch.randn(5, 6, generator=gen)
    return tracks


def test_track_alignment(model, monkeypatch):
    prev2curr = torch.eye(4, dtype=torch.float64)
    prev2curr[:3, 3] = torch.tensor([-1.2, 0.4, 0.0])
    c, s = math.cos(0.1), math.sin(0.1)
    prev2curr[:2, :2] = torch.tensor([[c, -s], [s, c]])
    tracks = _tracks(model)
    aligned = align_ref_points(tracks.ref_pts, prev2curr, model.pc_range,
                               tracks.pred_centers[:, 3:6], model.time_interval)
    ours = model._aligned_tracks(_tracks(model), prev2curr)
    assert ours.obj_idxes.tolist() == [-1, 0, 2, -1, 1]
    live = torch.tensor([False, True, True, False, True])
    assert torch.allclose(ours.ref_pts[live], aligned[live])
    assert torch.equal(ours.ref_pts[~live], tracks.ref_pts[~live])

    monkeypatch.setattr(model, 'track_alignment', 'reference')
    ref = model._aligned_tracks(_tracks(model), prev2curr)
    order = [0, 1, 3, 2, 4]  # [obj_idx <= 0 | obj_idx > 0], each in its order
    assert ref.obj_idxes.tolist() == [-1, 0, -1, 2, 1]
    assert torch.equal(ref.query, tracks.query[order])
    moved = torch.tensor([False, False, False, True, True])
    assert torch.allclose(ref.ref_pts[moved], aligned[order][moved])
    assert torch.equal(ref.ref_pts[~moved], tracks.ref_pts[order][~moved])  # id 0 not aligned


def test_predict_goes_through_the_switches(model, monkeypatch):
    """Streaming under bf16 autocast: tracks aligned by ``_aligned_tracks`` from the second
    frame on; with the reference scope the panoptic merge runs outside autocast on float32
    class logits and the mask logits in the autocast dtype (it widens them itself:
    test_merge_logits_dtype.py)."""
    calls, merges = [], []
    aligned_tracks, merge = model._aligned_tracks, model._merge

    def spy_align(tracks, prev2curr):
        calls.append(model.track_alignment)
        return aligned_tracks(tracks, prev2curr)

    def spy_merge(tracks, out):
        merges.append((torch.is_autocast_enabled('cpu'), out['thing_cls'][-1].dtype,
                       out['thing_masks'][-1].dtype))
        return merge(tracks, out)

    monkeypatch.setattr(model, '_aligned_tracks', spy_align)
    monkeypatch.setattr(model, '_merge', spy_merge)
    monkeypatch.setattr(model, 'track_alignment', 'reference')
    model.eval()
    model.reset_tracks()
    for t in range(2):
        sample = _h.make_clip([_h.make_frame(t, start=t == 0)])
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            model.predict(dict(imgs=_h.images(1, 1, seed=t)), [sample])
    model.reset_tracks()
    assert calls == ['reference']
    assert merges == [(False, torch.float32, torch.bfloat16)] * 2


def test_refinement_branches_get_the_head_init():
    """reg_branches were head modules in the reference: xavier-uniform, while the decoder
    layers get xavier-normal."""
    torch.manual_seed(0)
    head = MODELS.build(_h.tiny_cfg()['pts_bbox_head'])
    head.init_weights()

    def bound(w):
        return math.sqrt(6.0 / (w.shape[0] + w.shape[1]))

    for branch in head.decoder.reg_branches:
        w = branch.weight
        assert w.abs().max() <= bound(w)
        assert w.abs().max() > 0.8 * bound(w)  # spread over the uniform range
    ffn = [m.weight for m in head.decoder.layers[0].ffn.modules()
           if isinstance(m, torch.nn.Linear)]
    assert any(w.abs().max() > bound(w) for w in ffn)  # normal: tails beyond that bound
