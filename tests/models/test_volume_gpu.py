"""Volume side on CUDA: the CUDA paths (mmcv's deformable-attention kernel in the spatial
cross-attention, trackocc's 3D deformable-attention kernel, bev_pool_v2, cuDNN 3D convs)
agree with the CPU references, and the paper-size volume side runs forward and backward.

Runs under pytest (skipped without CUDA) or as ``python tests/models/test_volume_gpu.py``.
"""
import copy
import sys
import time

import pytest
import torch

sys.path.insert(0, __file__.rsplit('/', 1)[0])
import test_occupancy_encoder as occ_tests  # noqa: E402
import test_view_transformer as vt_tests  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')]


def _to(obj, device):
    if torch.is_tensor(obj):
        return obj.detach().to(device).requires_grad_(obj.requires_grad)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


@pytest.fixture(autouse=True)
def no_tf32():
    """Compare in full float32: cuDNN convolutions default to TF32 on Ampere and later."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _close(a, b, name, atol=1e-4, rtol=1e-3):
    assert torch.allclose(a, b, atol=atol, rtol=rtol), (
        f'{name}: max abs diff {(a - b).abs().max().item():.3g} '
        f'(max |a| {a.abs().max().item():.3g})')


def _grads(module):
    return {n: p.grad.detach().cpu() for n, p in module.named_parameters() if p.grad is not None}


def test_occupancy_encoder_cuda_matches_cpu():
    enc_cpu = occ_tests._tiny_encoder().eval()
    enc_gpu = copy.deepcopy(enc_cpu).cuda()
    inputs = occ_tests._tiny_inputs(B=2)
    outs = []
    for enc, args in ((enc_cpu, inputs), (enc_gpu, _to(inputs, 'cuda'))):
        occ, mask = enc(*args)
        (occ.square().mean() + mask.mean()).backward()
        outs.append((occ.detach().cpu(), mask.detach().cpu(), _grads(enc)))
    (occ_c, mask_c, g_c), (occ_g, mask_g, g_g) = outs
    _close(occ_c, occ_g, 'compact_occ')
    _close(mask_c, mask_g, 'mask_features')
    assert g_c.keys() == g_g.keys()
    for name in g_c:
        scale = g_c[name].abs().max().clamp(min=1e-6)
        assert (g_c[name] - g_g[name]).abs().max() / scale < 1e-2, name


def test_view_transformer_cuda_matches_cpu():
    vt_cpu = vt_tests._tiny_vt().eval()
    vt_gpu = copy.deepcopy(vt_cpu).cuda()
    cams = [vt_tests._forward_camera(50., 128., 32.),
            vt_tests._forward_camera(60., 120., 30., (0.0, 0.0, 1.5))]
    params = vt_tests._cam_params(cams, [vt_tests._aug(), vt_tests._aug(0.9, 3.0, 1.0)])
    feat = torch.randn(1, 2, 16, 4, 16, requires_grad=True)
    gt = torch.rand(1, 2, 64, 256) * 45
    outs = []
    for vt, args in ((vt_cpu, (feat, params, gt)), (vt_gpu, _to((feat, params, gt), 'cuda'))):
        volume, depth = vt(args[0], args[1])
        loss = vt.get_depth_loss(args[2], depth) + volume.square().sum()
        loss.backward()
        outs.append((volume.detach().cpu(), depth.detach().cpu(), loss.item(), _grads(vt)))
    (v_c, d_c, l_c, g_c), (v_g, d_g, l_g, g_g) = outs
    _close(v_c, v_g, 'volume')
    _close(d_c, d_g, 'depth', atol=1e-5)
    assert l_c == pytest.approx(l_g, rel=1e-4)
    for name in g_c:
        scale = g_c[name].abs().max().clamp(min=1e-6)
        assert (g_c[name] - g_g[name]).abs().max() / scale < 1e-2, name


def test_paper_size_volume_side_runs(amp=False):
    """Paper sizes (E 256, C_t 32, 5 cameras, 256x704): forward + backward, finite."""
    from trackocc.registry import MODELS
    torch.manual_seed(0)
    E, C, N, H, W = 256, 32, 5, 256, 704
    grid = dict(x=[-40, 40, 0.4], y=[-40, 40, 0.4], z=[-1, 5.4, 0.4], depth=[2.0, 42.0, 0.5])
    vt = MODELS.build(dict(type='LSSViewTransformerBEVDepth', grid_config=grid,
                           input_size=(H, W), in_channels=E, out_channels=C,
                           depthnet_cfg=dict(use_dcn=False, aspp_mid_channels=96)))
    backbone = MODELS.build(dict(type='CustomResNet3D', numC_input=C, num_layer=[1, 2, 4],
                                 num_channels=[C, 2 * C, 4 * C], stride=[1, 2, 2]))
    neck = MODELS.build(dict(type='LSSFPN3D', in_channels=7 * C, out_channels=C,
                             size=(50, 50, 16)))
    enc = MODELS.build(dict(
        type='OccupancyEncoder', in_channels=C, embed_dims=E, num_cams=N,
        positional_encoding=dict(num_feats=[96, 96, 64], row_num_embed=50, col_num_embed=50,
                                 tub_num_embed=16),
        layer_cfg=dict(self_attn_cfg=dict(num_heads=8, num_levels=1, num_points=4),
                       cross_attn_cfg=dict(num_heads=8, num_points=8),
                       ffn_cfg=dict(feedforward_channels=2 * E))))
    enc.init_weights()
    modules = torch.nn.ModuleList([vt, backbone, neck, enc]).cuda().train()
    lidar2cam = []
    for yaw in (0.0, 0.8, -0.8, 1.6, -1.6):
        c, s = torch.cos(torch.tensor(yaw)), torch.sin(torch.tensor(yaw))
        rot = torch.stack([torch.stack([s, -c, torch.tensor(0.)]), torch.tensor([0., 0., -1.]),
                           torch.stack([c, s, torch.tensor(0.)])])
        mat = torch.eye(4)
        mat[:3, :3] = rot
        mat[:3, 3] = -rot @ torch.tensor([1.5, 0., 2.0])
        lidar2cam.append(mat)
    cam2img = torch.eye(4).repeat(N, 1, 1)
    cam2img[:, 0, 0] = cam2img[:, 1, 1] = 0.7 * W
    cam2img[:, 0, 2], cam2img[:, 1, 2] = W / 2, H / 2
    params = dict(cam2img=cam2img[None].cuda(), lidar2cam=torch.stack(lidar2cam)[None].cuda(),
                  img_aug_matrix=torch.eye(4).repeat(1, N, 1, 1).cuda())
    mlvl = [torch.randn(1, N, E, H // s, W // s, device='cuda', requires_grad=True)
            for s in (4, 8, 16, 32)]
    gt = torch.rand(1, N, H, W, device='cuda') * 45
    lidar2img = params['cam2img'] @ params['lidar2cam']
    for it in range(3):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
            volume, depth = vt(mlvl[2], params)
            compact, ms = neck(backbone(volume))
            compact_occ, mask_features = enc(mlvl, compact, ms, lidar2img, (H, W))
            loss = (compact_occ.float().mean() + mask_features.float().mean()
                    + vt.get_depth_loss(gt, depth))
        torch.cuda.synchronize()
        t1 = time.time()
        loss.backward()
        torch.cuda.synchronize()
        t2 = time.time()
        print(f'paper size amp={amp} iter {it}: forward {1e3 * (t1 - t0):.0f} ms, backward '
              f'{1e3 * (t2 - t1):.0f} ms, peak {torch.cuda.max_memory_allocated() / 2**30:.1f}'
              f' GiB, loss {loss.item():.4f}')
        modules.zero_grad()
    assert compact_occ.shape == (1, E, 50, 50, 16)
    assert mask_features.shape == (1, E, 200, 200, 16)
    assert torch.isfinite(loss)


if __name__ == '__main__':
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    for fn in (test_view_transformer_cuda_matches_cpu, test_occupancy_encoder_cuda_matches_cpu):
        try:
            fn()
            print(fn.__name__, 'passed')
        except AssertionError as err:
            print(fn.__name__, 'FAILED', err)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    test_paper_size_volume_side_runs(amp=False)
    test_paper_size_volume_side_runs(amp=True)
    print('paper size passed')
