"""LSSViewTransformerBEVDepth: shapes, gradients, frustum geometry, depth loss."""
import numpy as np
import pytest
import torch

from trackocc.models.necks import LSSViewTransformerBEVDepth
from trackocc.models.necks.lss_view_transformer import decompose_img_aug_matrix

GRID = dict(x=(-40, 40, 0.4), y=(-40, 40, 0.4), z=(-1, 5.4, 0.4), depth=(2.0, 42.0, 0.5))
# input (64, 256) at stride 16 -> (4, 16) feature pixels at u = 0, 17, ..., 255, v = 0, 21, 42, 63
INPUT = (64, 256)


def _tiny_vt(**kwargs):
    cfg = dict(grid_config=GRID, input_size=INPUT, downsample=16, in_channels=16,
               out_channels=4, loss_depth_weight=1.0,
               depthnet_cfg=dict(use_dcn=False, aspp_mid_channels=8))
    cfg.update(kwargs)
    return LSSViewTransformerBEVDepth(**cfg)


def _forward_camera(f, cx, cy, position=(1.0, 0.5, 2.0)):
    """Camera at ``position`` looking along ego +x (cam x = -ego y, cam y = -ego z)."""
    rot = torch.tensor([[0., -1., 0.], [0., 0., -1.], [1., 0., 0.]])
    lidar2cam = torch.eye(4)
    lidar2cam[:3, :3] = rot
    lidar2cam[:3, 3] = -rot @ torch.tensor(position)
    cam2img = torch.eye(4)
    cam2img[:3, :3] = torch.tensor([[f, 0., cx], [0., f, cy], [0., 0., 1.]])
    return cam2img, lidar2cam


def _aug(scale=1.0, tu=0.0, tv=0.0):
    mat = torch.eye(4)
    mat[0, 0] = mat[1, 1] = scale
    mat[0, 2], mat[1, 2] = tu, tv
    return mat


def _cam_params(cams, augs):
    return dict(cam2img=torch.stack([c[0] for c in cams])[None],
                lidar2cam=torch.stack([c[1] for c in cams])[None],
                img_aug_matrix=torch.stack(augs)[None])


def test_decompose_img_aug_matrix_accepts_translation_in_column_2_or_3():
    a = _aug(0.5, 10.0, -5.0)
    b = _aug(0.5)
    b[0, 3], b[1, 3] = 10.0, -5.0
    for mat in (a, b):
        rot, trans = decompose_img_aug_matrix(mat)
        assert torch.allclose(rot, torch.diag(torch.tensor([0.5, 0.5, 1.0])))
        assert torch.allclose(trans, torch.tensor([10.0, -5.0, 0.0]))


@pytest.mark.parametrize('aug_case', ['identity', 'scaled'])
def test_frustum_point_lands_in_hand_computed_voxel(aug_case):
    vt = _tiny_vt()
    if aug_case == 'identity':
        cam, aug = _forward_camera(50., 128., 32.), _aug()
    else:  # original image twice as large, resized by 0.5 and shifted by (10, -5)
        cam, aug = _forward_camera(100., 236., 74.), _aug(0.5, 10.0, -5.0)
    params = _cam_params([cam], [aug])
    coords = vt.get_ego_coords(params['cam2img'], params['lidar2cam'], params['img_aug_matrix'])
    assert coords.shape == (1, 1, 80, 4, 16, 3)
    # pixel (u=136, v=42) = feature (row 2, col 8); depth bin 16 = 10 m.
    # camera point (8 * 10 / 50, 10 * 10 / 50, 10) = (1.6, 2.0, 10) -> ego (11.0, -1.1, 0.0)
    assert vt.frustum[16, 2, 8].tolist() == pytest.approx([136.0, 42.0, 10.0])
    assert coords[0, 0, 16, 2, 8].tolist() == pytest.approx([11.0, -1.1, 0.0], abs=1e-4)

    depth = torch.zeros(1, 1, 80, 4, 16)
    depth[0, 0, 16, 2, 8] = 1.0
    feat = torch.zeros(1, 1, 4, 4, 16)
    feat[0, 0, :, 2, 8] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    vol = vt.voxel_pooling(vt.pooling_ranks(params), depth, feat)
    assert vol.shape == (1, 4, 200, 200, 16)
    # voxel ((11 + 40) / 0.4, (-1.1 + 40) / 0.4, (0 + 1) / 0.4) = (127.5, 97.25, 2.5)
    nonzero = torch.nonzero(vol.abs().sum(1)[0]).tolist()
    assert nonzero == [[127, 97, 2]]
    assert vol[0, :, 127, 97, 2].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_frustum_pixel_positions():
    ref = _tiny_vt().frustum
    assert ref[0, 0, :, 0].tolist() == pytest.approx([17.0 * k for k in range(16)])
    assert ref[0, :, 0, 1].tolist() == pytest.approx([0.0, 21.0, 42.0, 63.0])
    assert ref[:, 0, 0, 2].tolist() == pytest.approx([2.0 + 0.5 * i for i in range(80)])
    centred = _tiny_vt(frustum_at_cell_centres=True).frustum
    assert centred[0, 0, :, 0].tolist() == pytest.approx([16.0 * k + 8 for k in range(16)])
    assert centred[0, :, 0, 1].tolist() == pytest.approx([8.0, 24.0, 40.0, 56.0])


def test_forward_shapes_and_gradients():
    torch.manual_seed(0)
    vt = _tiny_vt()
    cams = [_forward_camera(50., 128., 32.), _forward_camera(60., 120., 30., (0.0, 0.0, 1.5))]
    params = _cam_params(cams, [_aug(), _aug(0.9, 3.0, 1.0)])
    feat = torch.randn(1, 2, 16, 4, 16, requires_grad=True)
    volume, depth = vt(feat, params)
    assert volume.shape == (1, 4, 200, 200, 16)
    assert depth.shape == (2, 80, 4, 16)
    assert torch.allclose(depth.sum(1), torch.ones(2, 4, 16), atol=1e-5)
    assert volume.abs().sum() > 0
    volume.square().sum().backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    for name in ('depth_net.context_conv.weight', 'depth_net.depth_conv.4.weight',
                 'depth_net.depth_mlp.0.weight'):
        grad = dict(vt.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_cameras_seeing_no_voxel_give_an_empty_volume():
    vt = _tiny_vt()
    far = _forward_camera(50., 128., 32., position=(500.0, 0.0, 2.0))
    params = _cam_params([far, far], [_aug(), _aug()])
    feat = torch.randn(1, 2, 16, 4, 16, requires_grad=True)
    volume, _ = vt(feat, params)
    assert volume.shape == (1, 4, 200, 200, 16) and volume.abs().sum() == 0
    volume.sum().backward()
    assert feat.grad is not None and feat.grad.abs().sum() == 0


def test_bad_inputs_raise_clear_errors():
    vt = _tiny_vt()
    params = _cam_params([_forward_camera(50., 128., 32.)], [_aug()])
    with pytest.raises(ValueError, match='expected image features'):
        vt(torch.randn(1, 1, 16, 5, 16), params)
    with pytest.raises(ValueError, match='lidar2cam'):
        vt(torch.randn(1, 1, 16, 4, 16), dict(params, lidar2cam=torch.eye(4)[None]))
    with pytest.raises(ValueError, match='divisible'):
        _tiny_vt(input_size=(60, 256))
    with pytest.raises(ValueError, match='more than one camera'):
        vt.train()(torch.randn(1, 1, 16, 4, 16), params)
    vt.eval()(torch.randn(1, 1, 16, 4, 16), params)  # inference with one camera is fine


def test_collapse_z_and_autocast():
    vt = _tiny_vt(collapse_z=True)
    cams = [_forward_camera(50., 128., 32.)] * 2
    params = _cam_params(cams, [_aug(), _aug(0.9, 3.0, 1.0)])
    feat = torch.randn(1, 2, 16, 4, 16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        bev, depth = vt(feat.to(torch.bfloat16), params)
        loss = vt.get_depth_loss(torch.full((1, 2, 64, 256), 10.0), depth)
    # depth net, lifting and the depth loss run in float32 under autocast
    assert bev.shape == (1, 16 * 4, 200, 200) and bev.dtype == torch.float32
    assert depth.dtype == torch.float32 and torch.isfinite(loss)
    (bev.sum() + loss).backward()
    assert feat.grad.abs().sum() > 0


def test_depth_targets_and_loss():
    vt = _tiny_vt()
    gt = torch.zeros(1, 1, 64, 256)
    gt[0, 0, 3, 5] = 20.0       # feature pixel (0, 0): nearest of 20 m and 10 m -> 10 m
    gt[0, 0, 10, 2] = 10.0
    gt[0, 0, 20, 20] = 2.0      # feature pixel (1, 1): 2.0 m -> first bin
    gt[0, 0, 40, 40] = 1.0      # feature pixel (2, 2): closer than 2 m -> no target
    gt[0, 0, 60, 60] = 50.0     # feature pixel (3, 3): beyond 42.5 m -> no target
    labels = vt.get_downsampled_gt_depth(gt).view(4, 16, 80)
    assert labels[0, 0].nonzero().flatten().tolist() == [16]
    assert labels[1, 1].nonzero().flatten().tolist() == [0]
    assert labels.sum() == 2  # every other feature pixel has no target

    logits = torch.randn(1, 80, 4, 16, requires_grad=True)
    depth = logits.softmax(1)
    loss = vt.get_depth_loss(gt, depth)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grad = logits.grad[0].abs().sum(0)  # (4, 16)
    has_target = torch.zeros(4, 16, dtype=torch.bool)
    has_target[0, 0] = has_target[1, 1] = True
    assert (grad[~has_target] == 0).all()
    assert (grad[has_target] > 0).all()
    # the same loss by hand: BCE summed over bins, averaged over the 2 target pixels
    probs = depth.detach()[0].permute(1, 2, 0)
    manual = 0.0
    for (r, c), b in (((0, 0), 16), ((1, 1), 0)):
        target = torch.zeros(80)
        target[b] = 1
        manual += torch.nn.functional.binary_cross_entropy(probs[r, c], target,
                                                           reduction='sum')
    assert loss.item() == pytest.approx(manual.item() / 2, rel=1e-5)


def test_depth_loss_without_any_target_is_zero():
    vt = _tiny_vt(loss_depth_weight=3.0)
    depth = torch.randn(2, 80, 4, 16, requires_grad=True).softmax(1)
    loss = vt.get_depth_loss(torch.zeros(1, 2, 64, 256), depth)
    assert loss.item() == 0.0


def test_depth_loss_equals_the_former_masked_form():
    """Weights 0 on pixels without a target (no bool masks, no host read of the count): the
    former loss and gradient, also with probabilities that are exactly 0 or 1."""
    vt = _tiny_vt(loss_depth_weight=2.0)
    g = torch.Generator().manual_seed(4)
    gt = torch.rand(2, 3, 64, 256, generator=g) * 50.0
    gt[torch.rand(gt.shape, generator=g) < 0.995] = 0.0  # sparse LiDAR pixels
    logits = torch.randn(6, 80, 4, 16, generator=g) * 3.0
    logits[0, 5] = 200.0  # a softmax that underflows to exact 0 and 1
    grads = []
    for form in ('new', 'former'):
        x = logits.clone().requires_grad_(True)
        depth = x.softmax(1)
        if form == 'new':
            loss = vt.get_depth_loss(gt, depth)
        else:
            labels = vt.get_downsampled_gt_depth(gt)
            preds = depth.permute(0, 2, 3, 1).reshape(-1, 80)
            fg = labels.max(dim=1).values > 0.0
            loss = torch.nn.functional.binary_cross_entropy(preds[fg], labels[fg],
                                                            reduction='none').sum()
            loss = 2.0 * loss / max(1.0, float(fg.sum()))
        loss.backward()
        grads.append((loss.detach(), x.grad))
    assert 0 < vt.get_downsampled_gt_depth(gt).sum() < 6 * 4 * 16
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-9)


def test_image_to_ego_inverse_without_host_check():
    """linalg.inv_ex gives torch.inverse's matrices; a singular one still fails clearly."""
    from trackocc.models.necks.lss_view_transformer import image_to_ego
    cams = [_forward_camera(50., 128., 32.), _forward_camera(80., 100., 30., (0., 1., 1.5))]
    params = _cam_params(cams, [_aug(), _aug(0.5, 10.0, -5.0)])
    uvd = torch.rand(1, 2, 5, 3) * torch.tensor([256.0, 64.0, 40.0])
    got = image_to_ego(uvd, params['cam2img'], params['lidar2cam'], params['img_aug_matrix'])
    rot, trans = decompose_img_aug_matrix(params['img_aug_matrix'])
    pts = torch.inverse(rot)[:, :, None].matmul((uvd - trans[:, :, None]).unsqueeze(-1))
    pts = torch.cat((pts[..., :2, :] * pts[..., 2:3, :], pts[..., 2:3, :],
                     torch.ones_like(pts[..., :1, :])), dim=-2)
    img2ego = torch.inverse(params['lidar2cam']).matmul(torch.inverse(params['cam2img']))
    want = img2ego[:, :, None].matmul(pts).squeeze(-1)[..., :3]
    assert torch.equal(got, want)
    params['cam2img'][0, 1, 1, 1] = 0.0  # fy = 0
    with pytest.raises(RuntimeError, match='cam2img matrix of the batch is singular'):
        image_to_ego(uvd, params['cam2img'], params['lidar2cam'], params['img_aug_matrix'])


def test_lidar_depth_lifts_onto_occupied_voxels(synthetic_data_root):
    """Data-side and model-side geometry agree: LiDAR depth pixels of an augmented synthetic
    frame, lifted with :func:`image_to_ego`, land on occupied (non-free) voxels."""
    from mmengine.registry import init_default_scope
    from trackocc.registry import TRANSFORMS
    from trackocc.datasets import WaymoTrackOccDataset
    from trackocc.models.necks.lss_view_transformer import image_to_ego

    init_default_scope('trackocc')
    cams = ['CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_SIDE_LEFT', 'CAM_SIDE_RIGHT']
    prefix = dict(pts='kitti_format/training/velodyne', occ='pano_voxel04/training',
                  **{c: f'kitti_format/training/image_{i}' for i, c in enumerate(cams)})
    ds = WaymoTrackOccDataset(data_root=synthetic_data_root,
                              ann_file='kitti_format/waymo_infos_train_jpg.pkl',
                              data_prefix=prefix, pipeline=[], test_mode=False)
    frame = {k: v[0] for k, v in ds.get_clip_info(0).items()}
    aug_cfg = dict(input_size=(96, 160), resize=(-0.06, 0.11), rot=(-5.4, 5.4), flip=True,
                   crop_h=(0.0, 0.0), resize_test=0.0)
    np.random.seed(0)
    results = dict(frame)
    for cfg in (dict(type='LoadMultiViewImages', cams=cams),
                dict(type='MultiViewImageAugmentation', data_config=aug_cfg, is_train=True),
                dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=3),
                dict(type='PointsToMultiViewDepth', depth_range=(2.0, 42.0)),
                dict(type='LoadPanopticOccupancy')):
        results = TRANSFORMS.build(cfg)(results)
    gt_depth = torch.as_tensor(np.asarray(results['gt_depth']))  # (N, H, W)
    occupied = torch.as_tensor(results['gt_occ']['semantics'] != 15)
    mats = {k: torch.as_tensor(np.asarray(results[k]), dtype=torch.float32)[None]
            for k in ('cam2img', 'lidar2cam', 'img_aug_matrix')}

    def hit_rate(img_aug_matrix):
        hits = total = 0
        for n in range(gt_depth.shape[0]):
            rows, cols = torch.nonzero(gt_depth[n], as_tuple=True)
            uvd = torch.stack([cols + 0.5, rows + 0.5, gt_depth[n, rows, cols]], -1)
            ego = image_to_ego(uvd[None, None],
                               mats['cam2img'][:, n:n + 1], mats['lidar2cam'][:, n:n + 1],
                               img_aug_matrix[:, n:n + 1])[0, 0]
            idx = torch.floor((ego - torch.tensor([-40., -40., -1.])) / 0.4).long()
            inside = ((idx >= 0) & (idx < torch.tensor([200, 200, 16]))).all(-1)
            idx = idx[inside]
            # the LiDAR return lies on a voxel face: accept the voxel or a 26-neighbour
            near = torch.zeros(len(idx), dtype=torch.bool)
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for dz in (-1, 0, 1):
                        j = idx + torch.tensor([dx, dy, dz])
                        j = j.clamp(min=torch.zeros(3, dtype=torch.long),
                                    max=torch.tensor([199, 199, 15]))
                        near |= occupied[j[:, 0], j[:, 1], j[:, 2]]
            hits += int(near.sum())
            total += len(idx)
        return hits / max(total, 1), total

    rate, total = hit_rate(mats["img_aug_matrix"])
    assert total > 1000 and rate > 0.98, (rate, total)  # measured 1.0
    # ignoring the image augmentation misplaces the lifted points
    wrong, _ = hit_rate(torch.eye(4).expand(1, 5, 4, 4))
    assert wrong < 0.8 * rate, (wrong, rate)  # measured 0.45


def test_pooling_ranks_cached_per_geometry_at_inference_only():
    """A geometry key reuses the last ranks in eval mode (same volume as without the key);
    another key or training mode rebuilds them."""
    torch.manual_seed(0)
    vt = _tiny_vt()
    params = _cam_params([_forward_camera(50., 128., 32.)], [_aug()])
    feat = torch.randn(1, 1, 16, 4, 16)
    vt.eval()
    with torch.no_grad():
        plain, _ = vt(feat, params)
        keyed = dict(params, geometry_key=b'rig-a')
        first = vt.pooling_ranks(keyed)
        assert vt.pooling_ranks(keyed) is first
        cached, _ = vt(feat, keyed)
        assert torch.equal(plain, cached)
        moved = _cam_params([_forward_camera(50., 128., 32., (0.0, 0.0, 1.5))], [_aug()])
        other = vt.pooling_ranks(dict(moved, geometry_key=b'rig-b'))
        assert other is not first and not torch.equal(other.ranks_bev, first.ranks_bev)
    vt.train()
    assert vt.pooling_ranks(dict(moved, geometry_key=b'rig-b')) is not other


def test_rig_ranks_pool_as_the_keyed_ranks_at_fixed_addresses():
    """Fixed rig inputs: the ranks padded to every frustum point, rewritten in place for a
    new rig; the volume equals the keyed path's."""
    torch.manual_seed(0)
    vt = _tiny_vt().eval()
    feat = torch.randn(1, 1, 16, 4, 16)
    rigs = {b'rig-a': _cam_params([_forward_camera(50., 128., 32.)], [_aug()]),
            b'rig-b': _cam_params([_forward_camera(50., 128., 32., (0.0, 0.0, 1.5))], [_aug()])}
    with torch.no_grad():
        ptrs = None
        for key, params in list(rigs.items()) * 2:
            ranks = vt.rig_ranks(dict(params, geometry_key=key))
            assert ranks.ranks_bev.numel() == vt.D * 4 * 16  # every frustum point
            assert ptrs in (None, [t.data_ptr() for t in ranks])
            ptrs = [t.data_ptr() for t in ranks]
            got, _ = vt(feat, dict(params, ranks=ranks))
            want, _ = vt(feat, dict(params, geometry_key=key))
            torch.testing.assert_close(got, want)
        assert vt._rig.allocations == 1
        with pytest.raises(ValueError, match='BEVPoolRanks'):
            vt(feat, dict(params, ranks=tuple(ranks)))
    vt.train()
    with pytest.raises(ValueError, match='inference only'):
        vt.rig_ranks(dict(params, geometry_key=b'rig-a'))
