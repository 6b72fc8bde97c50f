"""OccupancyEncoder and its parts: 3D deformable attention, spatial cross-attention,
positional encoding, mask-feature upsampling."""
import math

import pytest
import torch

from trackocc.registry import MODELS
from trackocc.models.layers import (DeformableAttention3D, LearnedPositionalEncoding3D,
                                    SpatialCrossAttention, project_points_to_images)
from trackocc.models.layers import occupancy_encoder as occ_encoder_module
from trackocc.models.layers.occupancy_encoder import voxel_centres
from trackocc.models.layers.spatial_cross_attention import plan_camera_queries
from trackocc.ops import ext_available


def _forward_camera_lidar2img(f=40., cx=40., cy=16., position=(0., 0., 1.), yaw_left=False):
    """lidar2img of a camera at ``position`` looking along ego +x (or +y with yaw_left)."""
    if yaw_left:  # looking along ego +y: cam x = ego x, cam y = -ego z, cam z = ego y
        rot = torch.tensor([[1., 0., 0.], [0., 0., -1.], [0., 1., 0.]])
    else:
        rot = torch.tensor([[0., -1., 0.], [0., 0., -1.], [1., 0., 0.]])
    lidar2cam = torch.eye(4)
    lidar2cam[:3, :3] = rot
    lidar2cam[:3, 3] = -rot @ torch.tensor(position)
    cam2img = torch.eye(4)
    cam2img[:3, :3] = torch.tensor([[f, 0., cx], [0., f, cy], [0., 0., 1.]])
    return cam2img @ lidar2cam


def test_project_points_to_images_hand_computed():
    lidar2img = _forward_camera_lidar2img()[None, None]  # image 32 x 80
    points = torch.tensor([[10., 2., 1.],    # cam (-2, 0, 10) -> u = 40 - 8 = 32, v = 16
                           [-10., 0., 1.],   # behind the camera
                           [10., -15., 1.]])  # cam x = 15 -> u = 100 > 80: outside
    uv, visible = project_points_to_images(points, lidar2img, (32, 80))
    assert uv[0, 0, 0].tolist() == pytest.approx([32 / 80, 16 / 32])
    assert visible[0, 0].tolist() == [True, False, False]


def test_deformable_attention_3d_samples_at_reference_point():
    torch.manual_seed(0)
    attn = DeformableAttention3D(embed_dims=8, num_heads=2, num_levels=1, num_points=2,
                                 dropout=0.0)
    for lin in (attn.sampling_offsets, attn.attention_weights):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    for lin in (attn.value_proj, attn.output_proj):
        torch.nn.init.eye_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    X, Y, Z = 4, 3, 2
    volume = torch.randn(1, 8, X, Y, Z)
    value = volume.flatten(2).transpose(1, 2)
    _, ref = voxel_centres((X, Y, Z), (0, 0, 0, 1, 1, 1))
    query = torch.zeros(1, X * Y * Z, 8)
    shapes = torch.tensor([[X, Y, Z]])
    out = attn(query, value, identity=torch.zeros_like(query), reference_points=ref[None],
               spatial_shapes=shapes)
    # zero offsets at voxel centres: every query reads back its own voxel
    assert torch.allclose(out, value, atol=1e-5)
    # the reference implementation's axis order reads voxel (k, j, i) for query (i, j, k)
    attn.legacy_axis_order = True
    cube = torch.randn(1, 8, 3, 3, 3)
    value = cube.flatten(2).transpose(1, 2)
    _, ref = voxel_centres((3, 3, 3), (0, 0, 0, 1, 1, 1))
    out = attn(torch.zeros(1, 27, 8), value, identity=torch.zeros(1, 27, 8),
               reference_points=ref[None], spatial_shapes=torch.tensor([[3, 3, 3]]))
    expected = cube.permute(0, 1, 4, 3, 2).flatten(2).transpose(1, 2)
    assert torch.allclose(out, expected, atol=1e-5)


def _dense_sca(sca, query, value, ref_cam, visible, shapes, starts):
    """Naive spatial cross-attention: every query in every camera, then masked average."""
    B, N = value.shape[:2]
    outs = []
    for n in range(N):
        out = sca.deformable_attention(query, value[:, n], ref_cam[:, n], shapes, starts)
        outs.append(out * visible[:, n, :, None])
    slots = torch.stack(outs, 1).sum(1) / visible.sum(1).clamp(min=1)[..., None]
    return sca.output_proj(slots) + query


def test_spatial_cross_attention_matches_dense_computation():
    torch.manual_seed(0)
    sca = SpatialCrossAttention(embed_dims=16, num_heads=2, num_levels=2, num_points=2,
                                dropout=0.0)
    torch.nn.init.normal_(sca.deformable_attention.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(sca.deformable_attention.attention_weights.weight, std=0.1)
    B, N, Q = 2, 3, 12
    shapes = torch.tensor([[4, 6], [2, 3]])
    starts = torch.tensor([0, 24])
    query = torch.randn(B, Q, 16, requires_grad=True)
    value = torch.randn(B, N, 30, 16)
    ref_cam = torch.rand(B, N, Q, 1, 2)
    visible = torch.rand(B, N, Q) > 0.5
    visible[0, :, 0] = False  # a query no camera sees keeps residual + projected zero
    out = sca(query, value, ref_cam, visible, shapes, starts)
    expected = _dense_sca(sca, query, value, ref_cam, visible, shapes, starts)
    assert out.shape == (B, Q, 16)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(out[0, 0], query[0, 0] + sca.output_proj.bias, atol=1e-6)
    out.sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()


@pytest.mark.skipif(not ext_available(), reason='trackocc._ext not built (setup.py build_ext)')
def test_spatial_cross_attention_sampling_impls_agree():
    """sampling_impl='trackocc' (the compiled 3D kernels) computes what mmcv's reference does,
    forward and backward; an unknown name is refused."""
    torch.manual_seed(2)
    shapes, starts = torch.tensor([[4, 6], [2, 3]]), torch.tensor([0, 24])
    B, N, Q = 2, 3, 12
    query, value = torch.randn(B, Q, 16), torch.randn(B, N, 30, 16)
    ref_cam, visible = torch.rand(B, N, Q, 1, 2), torch.rand(B, N, Q) > 0.3
    results = []
    for impl in ('pytorch', 'trackocc'):
        torch.manual_seed(3)
        sca = SpatialCrossAttention(embed_dims=16, num_heads=2, num_levels=2, num_points=2,
                                    dropout=0.0, sampling_impl=impl)
        torch.nn.init.normal_(sca.deformable_attention.sampling_offsets.weight, std=0.1)
        q = query.clone().requires_grad_(True)
        out = sca(q, value, ref_cam, visible, shapes, starts)
        out.square().sum().backward()
        results.append((out, q.grad, sca.deformable_attention.sampling_offsets.weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='sampling_impl'):
        SpatialCrossAttention(embed_dims=16, num_heads=2, sampling_impl='cuda')


def _sca_case(seed, B, N, Q):
    """A small spatial cross-attention and random inputs: (sca, query, value, ref_cam,
    visible, spatial shapes, level starts)."""
    torch.manual_seed(seed)
    sca = SpatialCrossAttention(embed_dims=16, num_heads=2, num_levels=2, num_points=2,
                                dropout=0.0)
    shapes, starts = torch.tensor([[4, 6], [2, 3]]), torch.tensor([0, 24])
    query, value = torch.randn(B, Q, 16), torch.randn(B, N, 30, 16)
    ref_cam = torch.rand(B, N, Q, 1, 2)
    visible = torch.rand(B, N, Q) > 0.5
    return sca, query, value, ref_cam, visible, shapes, starts


def test_camera_query_plan_equals_visible_mask():
    B, N, Q = 2, 3, 12
    sca, query, value, ref_cam, visible, shapes, starts = _sca_case(1, B, N, Q)
    visible[1, 2] = False  # a camera that sees nothing
    plan = plan_camera_queries(visible)
    assert plan.order.shape == (B * N, int(visible.sum(-1).max()))
    assert plan.valid.sum().item() == visible.sum().item()
    assert torch.equal(plan.cams_seeing, visible.sum(1).clamp(min=1).float())
    want = sca(query, value, ref_cam, visible, shapes, starts)
    assert torch.equal(sca(query, value, ref_cam, plan, shapes, starts), want)
    with pytest.raises(ValueError, match='must match'):
        sca(query[:1], value[:1], ref_cam[:1], plan, shapes, starts)


def test_occupancy_encoder_reuses_camera_plan_per_geometry_key(monkeypatch):
    enc = _tiny_encoder().eval()
    img_feats, compact, ms, lidar2img, img_shape = _tiny_inputs()
    calls = []
    real = occ_encoder_module.plan_camera_queries
    monkeypatch.setattr(occ_encoder_module, 'plan_camera_queries',
                        lambda visible: calls.append(1) or real(visible))
    with torch.no_grad():
        want = enc(img_feats, compact, ms, lidar2img, img_shape)
        assert len(calls) == 1
        for key in (b'rig-a', b'rig-a', b'rig-a'):
            got = enc(img_feats, compact, ms, lidar2img, img_shape, geometry_key=key)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert len(calls) == 2  # planned once for rig a, then reused
        moved = lidar2img.clone()
        moved[..., 0, 3] += 5.0  # another rig under another key is planned anew
        enc(img_feats, compact, ms, moved, img_shape, geometry_key=b'rig-b')
        assert len(calls) == 3
        enc.train()  # training never caches
        enc(img_feats, compact, ms, lidar2img, img_shape, geometry_key=b'rig-b')
        enc(img_feats, compact, ms, lidar2img, img_shape, geometry_key=b'rig-b')
        assert len(calls) == 5 and enc._camera_cache is None


def test_positional_encoding_3d():
    pe = LearnedPositionalEncoding3D(num_feats=(4, 4, 2), row_num_embed=5, col_num_embed=4,
                                     tub_num_embed=3)
    pe.init_weights()
    pos = pe(torch.zeros(2, 5, 4, 3))
    assert pos.shape == (2, 10, 5, 4, 3)
    assert torch.equal(pos[:, :4, 1, 0, 0], pos[:, :4, 1, 3, 2])  # x part depends on x only
    assert not torch.equal(pos[0, :4, 0, 0, 0], pos[0, :4, 1, 0, 0])
    assert torch.equal(pos[0, 8:, 0, 0, 1], pe.tub_embed.weight[1])
    with pytest.raises(ValueError, match='along X'):
        pe(torch.zeros(1, 6, 4, 3))


def _tiny_encoder(**kwargs):
    cfg = dict(type='OccupancyEncoder', in_channels=4, embed_dims=32, num_cams=2,
               num_feature_levels=2, num_layers=1, pc_range=[-40, -40, -1, 40, 40, 5.4],
               positional_encoding=dict(num_feats=[12, 12, 8], row_num_embed=8,
                                        col_num_embed=8, tub_num_embed=4),
               layer_cfg=dict(self_attn_cfg=dict(num_heads=4, num_levels=1, num_points=4),
                              cross_attn_cfg=dict(num_heads=4, num_points=8),
                              ffn_cfg=dict(feedforward_channels=64)))
    cfg.update(kwargs)
    enc = MODELS.build(cfg)
    enc.init_weights()
    return enc


def _tiny_inputs(B=1):
    torch.manual_seed(1)
    img_feats = [torch.randn(B, 2, 32, 8, 20, requires_grad=True),
                 torch.randn(B, 2, 32, 4, 10, requires_grad=True)]
    compact = torch.randn(B, 4, 8, 8, 4, requires_grad=True)
    ms = [torch.randn(B, 4, 32, 32, 4), torch.randn(B, 8, 16, 16, 2),
          torch.randn(B, 16, 8, 8, 4)]
    lidar2img = torch.stack([_forward_camera_lidar2img(f=40., cx=80., cy=32.),
                             _forward_camera_lidar2img(f=40., cx=80., cy=32., yaw_left=True)])
    return img_feats, compact, ms, lidar2img[None].expand(B, -1, -1, -1), (64, 160)


def test_occupancy_encoder_shapes_and_gradients():
    enc = _tiny_encoder()
    img_feats, compact, ms, lidar2img, img_shape = _tiny_inputs(B=2)
    compact_occ, mask_features = enc(img_feats, compact, ms, lidar2img, img_shape)
    assert compact_occ.shape == (2, 32, 8, 8, 4)
    assert mask_features.shape == (2, 32, 32, 32, 4)
    assert (mask_features >= 0).all()
    (compact_occ.square().mean() + mask_features.mean()).backward()
    for t in img_feats + [compact]:
        assert t.grad is not None and t.grad.abs().sum() > 0
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    layer = enc.layers[0]
    for p in (layer.self_attn.sampling_offsets.weight,
              layer.cross_attn.deformable_attention.sampling_offsets.weight,
              enc.cams_embeds, enc.level_embeds, enc.positional_encoding.row_embed.weight):
        assert p.grad.abs().sum() > 0


def test_occupancy_encoder_under_autocast():
    enc = _tiny_encoder()
    img_feats, compact, ms, lidar2img, img_shape = _tiny_inputs()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        compact_occ, mask_features = enc(img_feats, compact, ms, lidar2img, img_shape)
    assert compact_occ.shape == (1, 32, 8, 8, 4) and mask_features.shape == (1, 32, 32, 32, 4)
    (compact_occ.float().mean() + mask_features.float().mean()).backward()
    assert torch.isfinite(compact.grad).all() and compact.grad.abs().sum() > 0


def test_reference_init_overrides_attention_zero_init():
    enc = _tiny_encoder()
    offsets = enc.layers[0].self_attn.sampling_offsets
    assert offsets.weight.abs().sum() > 0  # xavier-normal, as the reference head's init
    assert offsets.bias.abs().sum() > 0    # 1-dim: the ray pattern is kept
    plain = _tiny_encoder(reference_init=False)
    assert plain.layers[0].self_attn.sampling_offsets.weight.abs().sum() == 0


def test_occupancy_encoder_bad_inputs():
    enc = _tiny_encoder()
    img_feats, compact, ms, lidar2img, img_shape = _tiny_inputs()
    with pytest.raises(ValueError, match='image feature levels'):
        enc(img_feats[:1], compact, ms, lidar2img, img_shape)
    with pytest.raises(ValueError, match='lidar2img'):
        enc(img_feats, compact, ms, lidar2img[:, :1], img_shape)
    with pytest.raises(ValueError, match='channels'):
        enc(img_feats, compact, [ms[1], ms[1], ms[2]], lidar2img, img_shape)
    with pytest.raises(ValueError, match='num_feats'):
        _tiny_encoder(positional_encoding=dict(num_feats=[8, 8, 8], row_num_embed=8,
                                               col_num_embed=8, tub_num_embed=4))


def test_camera_query_plan_padded_to_a_length():
    B, N, Q = 1, 2, 12
    sca, query, value, ref_cam, visible, shapes, starts = _sca_case(2, B, N, Q)
    need = int(visible.sum(-1).max())
    plan = plan_camera_queries(visible, Q)
    assert plan.order.shape == (B * N, Q) and plan.valid.sum() == visible.sum()
    torch.testing.assert_close(sca(query, value, ref_cam, plan, shapes, starts),
                               sca(query, value, ref_cam, visible, shapes, starts))
    for length in (need - 1, Q + 1):
        with pytest.raises(ValueError, match='must lie between'):
            plan_camera_queries(visible, length)


def test_rig_camera_queries_keep_a_length_that_only_grows():
    """Fixed rig inputs: the camera points and the plan held at fixed addresses, the plan's
    length padded past the first rig's largest visible count and kept while rigs fit it; the
    encoder's output as with the keyed plan."""
    enc = _tiny_encoder().eval()
    img_feats, compact, ms, lidar2img, img_shape = _tiny_inputs()
    volume = compact.shape[2:]
    Q = 8 * 8 * 4
    rigs = {}
    for key, focal_scale in ((b'narrow', 2.0), (b'narrower', 4.0), (b'wide', 0.25)):
        rigs[key] = lidar2img.clone()
        rigs[key][:, :, 0] *= focal_scale  # a longer focal length: a narrower field of view
    with torch.no_grad():
        ref_cam, plan = enc.rig_camera_queries(rigs[b'narrow'], img_shape, b'narrow', volume)
        need = int(plan.valid.sum(1).max())
        length = plan.order.shape[1]
        assert need < length == min(Q, math.ceil(need * 1.05 / 64) * 64) < Q
        got = enc(img_feats, compact, ms, rigs[b'narrow'], img_shape,
                  camera_queries=(ref_cam, plan))
        want = enc(img_feats, compact, ms, rigs[b'narrow'], img_shape, geometry_key=b'narrow')
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        assert enc.rig_camera_queries(rigs[b'narrow'], img_shape, b'narrow', volume)[1] is plan
        _, fewer = enc.rig_camera_queries(rigs[b'narrower'], img_shape, b'narrower', volume)
        assert fewer.order.shape[1] == length and fewer.order.data_ptr() == plan.order.data_ptr()
        assert int(fewer.valid.sum(1).max()) < need
        _, more = enc.rig_camera_queries(rigs[b'wide'], img_shape, b'wide', volume)
        assert int(more.valid.sum(1).max()) > length and more.order.shape[1] > length
        assert enc._rig.allocations == 2
    enc.train()
    with pytest.raises(ValueError, match='inference only'):
        enc.rig_camera_queries(lidar2img, img_shape, b'narrow', volume)
