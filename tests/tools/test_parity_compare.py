"""trackocc's side of the parity harness (tools/parity/compare.py).

The full comparison needs a dump of the original (made in the reference env, not in CI): it
runs when ``TRACKOCC_PARITY_DUMP`` names one and is skipped otherwise. The table arithmetic,
the sampled-entry lookup, the camera matrices and the config variant run always.
"""
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch

PARITY = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'parity')
if PARITY not in sys.path:
    sys.path.insert(0, PARITY)

import compare_model  # noqa: E402
import compare_pipeline  # noqa: E402
import compare_tables as ct  # noqa: E402
import dump_format  # noqa: E402


def _sampled(full: torch.Tensor, count: int):
    idx = dump_format.sample_index_tensor(full.numel(), count)
    info = dict(shape=list(full.shape), numel=full.numel(), count=count,
                multiplier=dump_format.sample_multiplier(full.numel()),
                abs_max=float(full.abs().max()))
    return full.reshape(-1)[idx].clone(), info


def test_compare_tensor_sampled_finds_a_sampled_difference():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(4, 50, 7, generator=g)
    ref, info = _sampled(full, 97)
    assert ct.compare_tensor('x', ref, info, full.clone()).ok
    idx = dump_format.sample_index_tensor(full.numel(), 97)
    ours = full.clone()
    ours.view(-1)[idx[5]] += 1e-2 * float(full.abs().max())
    row = ct.compare_tensor('x', ref, info, ours)
    assert not row.ok and row.max_rel == pytest.approx(1e-2, rel=1e-3)
    # a difference at an index that was not sampled is not visible, but a shape change is
    assert not ct.compare_tensor('x', ref, info, full[:3]).ok


def test_compare_tensor_full_relative_to_reference_max():
    ref = torch.tensor([10.0, -20.0, 0.5], dtype=torch.float64)
    step = torch.tensor([0., 0., 1e-3], dtype=torch.float64)
    row = ct.compare_tensor('y', ref, None, ref + step)
    assert row.max_abs == pytest.approx(1e-3) and row.max_rel == pytest.approx(5e-5)
    assert row.ok
    assert not ct.compare_tensor('y', ref, None, ref + 10 * step).ok
    nan = torch.tensor([float('nan'), 1.0])
    assert ct.compare_tensor('n', nan, None, nan.clone()).ok
    assert not ct.compare_tensor('n', nan, None, torch.tensor([0.0, 1.0])).ok


def test_sampled_record_judges_like_the_full_tensor():
    g = torch.Generator().manual_seed(2)
    full = torch.randn(3, 40, 9, generator=g)
    ref, info = _sampled(full, 101)
    ours = full.clone()
    idx = dump_format.sample_index_tensor(full.numel(), 101)
    ours.view(-1)[idx[7]] += 1e-2 * float(full.abs().max())
    a = ct.compare_tensor('x', ref, info, ours)
    b = ct.compare_tensor('x', ref, info, ct.SampledRecord.of(ours, info))
    assert not a.ok and not b.ok and a.max_abs == pytest.approx(b.max_abs)
    assert ct.compare_tensor('x', ref, info, ct.SampledRecord.of(full, info)).ok
    assert not ct.compare_tensor('x', ref, info, ct.SampledRecord((1, 2), ref)).ok  # shape


def test_compare_exact_and_render():
    a = torch.tensor([1, 2, 3])
    assert ct.compare_exact('a', a, a.clone()).ok
    row = ct.compare_exact('a', a, torch.tensor([1, 2, 4]))
    assert not row.ok and row.max_rel == pytest.approx(1 / 3)
    table = ct.Table('t', [row])
    assert 'FAIL' in table.render() and not table.ok


def _one_camera(prefix='f/'):
    """The original's matrices of one camera (yawed 0.3 rad, offset, a 0.5x resize and a
    crop) under ``prefix``, as a dump stores them."""
    angle = 0.3
    rot = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                        [-np.sin(angle), 0, np.cos(angle)]], dtype=torch.float32)
    return {prefix + 'input/rots': rot[None, None],
            prefix + 'input/trans': torch.tensor([[[1., 2., 0.5]]]),
            prefix + 'input/intrins': torch.tensor([[[[500., 0, 320], [0, 500., 240],
                                                      [0, 0, 1]]]]),
            prefix + 'input/post_rots': torch.tensor([[[[0.5, 0, 0], [0, 0.5, 0], [0, 0, 1]]]]),
            prefix + 'input/post_trans': torch.tensor([[[-10., -20., 0]]]),
            prefix + 'input/bda': torch.eye(3)[None],
            prefix + 'input/img': torch.zeros(1, 1, 3, 8, 8)}


def test_camera_meta_projects_like_the_original():
    """lidar2img of camera_meta = post-augmentation pixels of the original's geometry
    (post_rots @ (intrins @ rots^-1 (p - trans)) / depth + post_trans)."""
    g = torch.Generator().manual_seed(1)
    t = _one_camera()
    rot = t['f/input/rots'][0, 0]
    meta = compare_model.camera_meta(t, 'f/')
    p = torch.rand(3, generator=g, dtype=torch.float64) * 5 + torch.tensor([0., 0., 8.])
    cam = rot.double().T @ (p - t['f/input/trans'][0, 0].double())
    uvd = t['f/input/intrins'][0, 0].double() @ cam
    uv = uvd[:2] / uvd[2]
    want = t['f/input/post_rots'][0, 0, :2, :2].double() @ uv + \
        t['f/input/post_trans'][0, 0, :2].double()
    h = torch.as_tensor(meta['lidar2img'][0]) @ torch.cat([p, p.new_ones(1)])
    assert torch.allclose(h[:2] / h[2], want, atol=1e-9)


def test_original_lift_equals_our_geometry_and_voxel_flips_are_counted():
    """The harness's lift in the original's float32 order (compare_model.original_lift) and
    our view transformer's lift agree to float32 noise on the same cameras; a point moved
    across a voxel border is counted by voxel_agreement."""
    from types import SimpleNamespace

    from trackocc.models.necks.lss_view_transformer import image_to_ego
    t = _one_camera()
    d = torch.arange(2., 42., 0.5)
    u, v = torch.linspace(0, 351, 22), torch.linspace(0, 127, 8)
    frustum = torch.stack(torch.broadcast_tensors(u.view(1, 1, -1), v.view(1, -1, 1),
                                                  d.view(-1, 1, 1)), -1)  # (D, h, w, 3)
    ref = compare_model.original_lift(t, 'f/', frustum)
    meta = compare_model.camera_meta(t, 'f/')
    mats = [torch.as_tensor(meta[k]).float()[None] for k in
            ('cam2img', 'lidar2cam', 'img_aug_matrix')]
    ours = image_to_ego(frustum[None, None].expand(1, 1, *frustum.shape), *mats)
    assert ref.shape == ours.shape == (1, 1, 80, 8, 22, 3)
    assert (ours - ref).abs().max() < 1e-3  # metres; float32 round trips of the matrices
    vt = SimpleNamespace(grid_lower_bound=torch.tensor([-40., -40., -1.]),
                         grid_interval=torch.tensor([0.4, 0.4, 0.4]), grid_size=(200, 200, 16),
                         legacy_voxel_index=True)
    same = compare_model.voxel_agreement(vt, ref, ref.clone())
    assert same['differing'] == 0 and same['inside'] > 0
    flat = ref.reshape(-1, 3)
    inside = ((flat > torch.tensor([-39., -39., 0.])) & (flat < torch.tensor([39., 39., 4.])))
    k = int(torch.nonzero(inside.all(-1))[0])
    moved = flat.clone()
    moved[k, 0] += 0.4  # one voxel along x
    assert compare_model.voxel_agreement(vt, moved.view_as(ref), ref)['differing'] == 1


def test_small_variant_maps_onto_our_config():
    import small_config
    cfg = compare_model.load_config(small_config.overrides_of('small'))
    m = cfg.model
    assert m.embed_dims == 128 and m.img_neck.out_channels == 128
    assert m.num_thing_queries == 50 and m.pts_bbox_head.num_stuff_queries == 20
    assert m.img_view_transformer.out_channels == 16
    assert tuple(m.img_view_transformer.input_size) == (128, 352)
    assert m.pts_bbox_head.sem_hidden_channels == 32
    assert m.track_score_classes == [1, 2, 3, 4]
    with pytest.raises(KeyError, match='no counterpart'):
        compare_model.load_config({'unknown_var': 1})


DUMP = os.environ.get('TRACKOCC_PARITY_DUMP')


@pytest.mark.skipif(not DUMP, reason='TRACKOCC_PARITY_DUMP does not name a reference dump '
                    '(made with tools/parity/dump_reference.py in the reference env)')
def test_compare_against_reference_dump(tmp_path):
    import compare
    out = tmp_path / 'parity.json'
    rc = compare.main(['--dump', DUMP, '--json', str(out)])
    result = json.loads(out.read_text())
    failed = [f'{tab["title"]}: {row["key"]} ({row["note"]})' for tab in result['tables']
              for row in tab['rows'] if not row['ok']]
    assert rc == 0 and result['ok'], 'outside tolerance:\n' + '\n'.join(failed)


def _original_depth_rule(cols, rows, depth, h, w, order):
    """The original's per-pixel choice: sort by the float32 key rank + depth / 100 with
    ``order`` deciding among equal keys (an unstable sort may give any), keep the first."""
    rank = (cols + rows * w).astype(np.float32)
    key = rank + depth.astype(np.float32) / np.float32(100)
    idx = sorted(range(len(key)), key=lambda i: (key[i], order[i]))
    out = np.zeros((h, w), np.float32)
    seen = set()
    for i in idx:
        if rank[i] not in seen:
            seen.add(rank[i])
            out[rows[i], cols[i]] = depth[i]
    return torch.from_numpy(out)


def test_depth_key_ties_are_the_original_sort_rule_ambiguity():
    from trackocc.datasets.transforms.depth_maps import points_to_depth_map
    h, w = 256, 704
    # two points per pixel: at the last row the key spacing is 1/64 (1.6 m of depth), at
    # the first row it is ~1e-6; depths 29.9 / 30.1 tie only at the last row
    cols = np.array([5, 5, 9, 9])
    rows = np.array([h - 1, h - 1, 0, 0])
    depth = np.array([30.1, 29.9, 30.1, 29.9], np.float32)
    ours = torch.from_numpy(points_to_depth_map(
        np.stack([cols, rows, depth], 1).astype(np.float64), h, w, (2.0, 42.0)))
    assert ours[h - 1, 5] == ours[0, 9] == np.float32(29.9)  # the nearest point
    ref = _original_depth_rule(cols, rows, depth, h, w, order=[0, 1, 2, 3])
    assert ref[h - 1, 5] == np.float32(30.1) and ref[0, 9] == np.float32(29.9)  # first tied
    ties = compare_pipeline.depth_key_ties(ref, ours)
    assert ties[h - 1, 5] and not ties[0, 9] and int(ties.sum()) == 1
    # a real difference (other depth bin, beyond the key spacing) is not a tie
    ref[0, 9] = 31.0
    assert not compare_pipeline.depth_key_ties(ref, ours)[0, 9]


def test_reference_points_are_judged_as_grid_positions():
    import compare
    # a point near the grid border: p = 7.2e-4 of the range; 4e-6 of the grid (0.3 mm over
    # 80 m) moves its logit by ~6e-3, 5e-4 of the tensor's max |logit| (11.5)
    p = torch.tensor([[7.2e-4, 0.5, 0.9], [0.99999, 0.3, 0.2]], dtype=torch.float64)
    ref = torch.logit(p)
    near = torch.logit(p + torch.tensor([[4e-6, 0, 0], [0, 0, 0]], dtype=torch.float64))
    assert not ct.compare_tensor('ref_pts', ref, None, near).ok
    row = compare._logit_points_row('ref_pts', ref, near)
    assert row.ok and 'as logits' in row.note
    far = torch.logit(p + torch.tensor([[0, 1e-3, 0], [0, 0, 0]], dtype=torch.float64))
    assert not compare._logit_points_row('ref_pts', ref, far).ok
