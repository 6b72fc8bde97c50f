"""CUDA kernels of trackocc._ext against the pure-PyTorch references (GPU only)."""
import math

import pytest
import torch

from trackocc.ops import (bev_pool_v2, ext_with_cuda, multi_scale_deformable_attn_3d,
                          pad_pooling_ranks, voxel_pooling_prepare)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
]

# the paper's grid: 200 x 200 x 16 voxels of 0.4 m
LOWER, STEP, SIZE = (-40.0, -40.0, -1.0), (0.4, 0.4, 0.4), (200, 200, 16)


@pytest.fixture(autouse=True)
def _need_cuda_ext():
    if not ext_with_cuda():
        pytest.fail('trackocc._ext has no CUDA kernels: build with FORCE_CUDA=1')


def frustum_coor(B=1, N=5, D=80, h=16, w=44, img=(256, 704), device='cuda'):
    """(B, N, D, h, w, 3) ego coordinates of a ring of N pinhole cameras (2-42 m depths)."""
    H, W = img
    f = 0.8 * W / 2
    u = torch.linspace(0, W - 1, w, device=device).view(1, 1, w).expand(D, h, w)
    v = torch.linspace(0, H - 1, h, device=device).view(1, h, 1).expand(D, h, w)
    d = torch.arange(2.0, 42.0, 0.5, device=device)[:D].view(D, 1, 1).expand(D, h, w)
    xc, yc = (u - W / 2) * d / f, (v - H / 2) * d / f
    out = []
    for b in range(B):
        cams = []
        for n in range(N):
            yaw = 2 * math.pi * n / N + 0.1 * b
            fwd = (math.cos(yaw), math.sin(yaw))
            right = (math.sin(yaw), -math.cos(yaw))
            x = 1.5 + d * fwd[0] + xc * right[0]
            y = d * fwd[1] + xc * right[1]
            z = 2.0 - yc
            cams.append(torch.stack([x, y, z], -1))
        out.append(torch.stack(cams))
    return torch.stack(out)


def _bev_inputs(dtype, B=2, C=32, seed=0, **kw):
    g = torch.Generator(device='cuda').manual_seed(seed)
    coor = frustum_coor(B=B, **kw)
    _, N, D, h, w, _ = coor.shape
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    depth = torch.rand(B, N, D, h, w, device='cuda', generator=g).softmax(2).to(dtype)
    feat = torch.randn(B, N, h, w, C, device='cuda', generator=g).to(dtype)
    shape = (B, SIZE[2], SIZE[1], SIZE[0], C)
    return depth, feat, r, shape


def _bev_fwd_bwd(impl, depth, feat, r, shape, grad_out):
    d, f = depth.detach().requires_grad_(True), feat.detach().requires_grad_(True)
    out = bev_pool_v2(d, f, *r[:3], shape, *r[3:], impl=impl)
    out.backward(grad_out)
    return out, d.grad, f.grad


BEV_TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


@pytest.mark.parametrize('dtype', list(BEV_TOL))
def test_bev_pool_cuda_matches_reference_at_paper_size(dtype):
    depth, feat, r, shape = _bev_inputs(dtype)
    grad_out = torch.randn(shape[0], shape[4], *shape[1:4], device='cuda').to(dtype)
    # reference in float32 on the same (rounded) inputs
    ref = _bev_fwd_bwd('pytorch', depth.float(), feat.float(), r, shape, grad_out.float())
    cuda = _bev_fwd_bwd(None, depth, feat, r, shape, grad_out)
    assert cuda[0].grad_fn is not None and 'BEVPoolV2' in type(cuda[0].grad_fn).__name__
    tol = BEV_TOL[dtype]
    for name, a, b in zip(('out', 'grad_depth', 'grad_feat'), cuda, ref):
        assert a.dtype == dtype, name
        scale = b.abs().max().clamp_min(1.0)
        err = (a.float() - b).abs().max() / scale
        assert err < tol, f'{name}: max error {err:.2e} (relative to {scale:.2f})'


@pytest.mark.parametrize('C', [80, 160])
def test_bev_pool_cuda_wide_features(C):
    """Channels beyond the 32 that the backward's vector path (C % 4 == 0) keeps in registers
    per interval: the rest is read again for each point."""
    depth, feat, r, shape = _bev_inputs(torch.float32, C=C, D=20, seed=2)
    grad_out = torch.randn(shape[0], shape[4], *shape[1:4], device='cuda')
    ref = _bev_fwd_bwd('pytorch', depth, feat, r, shape, grad_out)
    cuda = _bev_fwd_bwd(None, depth, feat, r, shape, grad_out)
    for name, a, b in zip(('out', 'grad_depth', 'grad_feat'), cuda, ref):
        scale = b.abs().max().clamp_min(1.0)
        assert (a - b).abs().max() / scale < 1e-4, name


@pytest.mark.parametrize('C', [3, 4])  # element-wise / vector kernels
def test_bev_pool_cuda_gradcheck_double(C):
    coor = frustum_coor(B=1, N=2, D=4, h=2, w=3, img=(32, 48)) / 4.0  # a few shared voxels
    r = voxel_pooling_prepare(coor, (-10.0, -10.0, -1.0), (1.0, 1.0, 1.0), (20, 20, 4))
    depth = torch.rand(1, 2, 4, 2, 3, device='cuda', dtype=torch.float64, requires_grad=True)
    feat = torch.rand(1, 2, 2, 3, C, device='cuda', dtype=torch.float64, requires_grad=True)
    assert r.ranks_bev.numel() > r.interval_starts.numel() > 0
    fn = lambda d, f: bev_pool_v2(d, f, *r[:3], (1, 4, 20, 20, C), *r[3:])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (depth, feat))


def test_bev_pool_cuda_edge_cases():
    # all points outside the grid: zeros and zero gradients
    coor = frustum_coor(B=2, N=1, D=3, h=2, w=2) + 1000.0
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    assert r.ranks_bev.numel() == 0
    depth = torch.rand(2, 1, 3, 2, 2, device='cuda', requires_grad=True)
    feat = torch.rand(2, 1, 2, 2, 8, device='cuda', requires_grad=True)
    out = bev_pool_v2(depth, feat, *r[:3], (2, 16, 200, 200, 8), *r[3:])
    out.sum().backward()
    assert not out.any() and not depth.grad.any() and not feat.grad.any()
    # empty depth bins, batch > 1 and a non-contiguous feature view (B, N, C, h, w) -> (..., C)
    depth, feat, r, shape = _bev_inputs(torch.float32, B=3, C=16, D=40, seed=1)
    depth[:, :, ::3] = 0
    feat_nc = feat.permute(0, 1, 4, 2, 3).contiguous().permute(0, 1, 3, 4, 2)
    depth_nc = depth.transpose(3, 4).contiguous().transpose(3, 4)
    assert not feat_nc.is_contiguous() and not depth_nc.is_contiguous()
    grad_out = torch.randn(shape[0], shape[4], *shape[1:4], device='cuda')
    ref = _bev_fwd_bwd('pytorch', depth, feat, r, shape, grad_out)
    cuda = _bev_fwd_bwd(None, depth_nc, feat_nc, r, shape, grad_out)
    for a, b in zip(cuda, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the batches do not leak into each other: batch 1 pooled alone gives the same volume
    r1 = voxel_pooling_prepare(frustum_coor(B=3, D=40)[1:2], LOWER, STEP, SIZE)
    single = bev_pool_v2(depth[1:2], feat[1:2], *r1[:3], (1,) + shape[1:], *r1[3:])
    torch.testing.assert_close(cuda[0][1:2], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('C', [32, 37])  # vector / element-wise write of the output
def test_bev_pool_cuda_sets_every_output_element(C):
    """The CUDA forward writes the empty voxels' zeros itself (no zero fill): the caching
    allocator's memory, poisoned with NaN before the call, must not show through."""
    depth, feat, r, shape = _bev_inputs(torch.float32, B=2, C=C, seed=2)
    ref = bev_pool_v2(depth, feat, *r[:3], shape, *r[3:], impl='pytorch')
    poison = torch.full((4 * ref.numel(),), float('nan'), device='cuda')
    del poison  # its block goes back to the cache, NaN inside, and serves the next allocations
    out = bev_pool_v2(depth, feat, *r[:3], shape, *r[3:])
    assert not out.isnan().any()
    assert (out[ref == 0] == 0).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('C', [32, 37])  # vector / element-wise sums
def test_bev_pool_cuda_skips_padding(C):
    """Fixed-size ranks (:func:`pad_pooling_ranks`, a CUDA graph's inputs across camera
    rigs): the empty padding intervals claim no voxel and pool nothing."""
    depth, feat, r, shape = _bev_inputs(torch.float32, B=2, C=C, seed=3)
    padded = pad_pooling_ranks(r, depth.numel(), depth.numel())
    ref = bev_pool_v2(depth, feat, *r[:3], shape, *r[3:])
    out = bev_pool_v2(depth, feat, *padded[:3], shape, *padded[3:])
    assert torch.equal(out, ref)  # the same sums, each written once


def test_bev_pool_cuda_repeatable_and_capturable():
    """The output and the depth gradient are stored once per element (bit-equal between
    runs; the feature gradient sums with atomics); forward + backward replay from a CUDA
    graph with the eager results."""
    depth, feat, r, shape = _bev_inputs(torch.float32, seed=4)
    grad_out = torch.randn(shape[0], shape[4], *shape[1:4], device='cuda')
    first = _bev_fwd_bwd(None, depth, feat, r, shape, grad_out)
    second = _bev_fwd_bwd(None, depth, feat, r, shape, grad_out)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    torch.testing.assert_close(first[2], second[2], rtol=1e-5, atol=1e-6)
    d, f = depth.clone().requires_grad_(True), feat.clone().requires_grad_(True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        bev_pool_v2(d, f, *r[:3], shape, *r[3:]).backward(grad_out)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    d.grad = f.grad = None
    with torch.cuda.graph(graph):
        out = bev_pool_v2(d, f, *r[:3], shape, *r[3:])
        out.backward(grad_out)
    d.data.copy_(depth * 2)
    graph.replay()
    torch.cuda.synchronize()
    again = _bev_fwd_bwd(None, depth * 2, feat, r, shape, grad_out)
    for a, b in zip((out, d.grad, f.grad), again):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bev_pool_cuda_long_intervals():
    """Intervals of up to thousands of points (the paper frustum's are at most 28 long): a
    coarse grid pools many frustum points per voxel; C = 37 leaves a partial warp of
    channels."""
    coor = frustum_coor(B=1, N=2, D=80, h=16, w=44)
    r = voxel_pooling_prepare(coor, (-42.0, -42.0, -4.0), (6.0, 6.0, 4.0), (14, 14, 2))
    lengths = r.interval_lengths
    assert int(lengths.max()) > 1000
    g = torch.Generator(device='cuda').manual_seed(6)
    depth = torch.rand(1, 2, 80, 16, 44, device='cuda', generator=g)
    for C in (32, 37):
        feat = torch.randn(1, 2, 16, 44, C, device='cuda', generator=g)
        shape = (1, 2, 14, 14, C)
        grad_out = torch.randn(1, C, 2, 14, 14, device='cuda', generator=g)
        ref = _bev_fwd_bwd('pytorch', depth, feat, r, shape, grad_out)
        cuda = _bev_fwd_bwd(None, depth, feat, r, shape, grad_out)
        for name, a, b in zip(('out', 'grad_depth', 'grad_feat'), cuda, ref):
            scale = b.abs().max().clamp_min(1.0)
            assert (a - b).abs().max() / scale < 1e-4, (C, name)


def _msda_inputs(dtype, B=1, Q=2000, M=8, Dh=32, P=4, shapes=((50, 50, 16),), seed=0,
                 spread=0.1):
    g = torch.Generator(device='cuda').manual_seed(seed)
    shapes_t = torch.tensor(shapes, device='cuda')
    sizes = shapes_t.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    L = len(shapes)
    value = torch.randn(B, int(sizes.sum()), M, Dh, device='cuda', generator=g).to(dtype)
    loc = torch.rand(B, Q, M, L, P, 3, device='cuda', generator=g) * (1 + 2 * spread) - spread
    attn = torch.rand(B, Q, M, L, P, device='cuda', generator=g)
    attn = (attn / attn.sum((-1, -2), keepdim=True))
    return value, shapes_t, starts, loc, attn


def _msda_fwd_bwd(impl, value, shapes, starts, loc, attn, grad_out):
    v, lc, a = (t.detach().requires_grad_(True) for t in (value, loc, attn))
    out = multi_scale_deformable_attn_3d(v, shapes, starts, lc, a, impl=impl)
    out.backward(grad_out)
    return out, v.grad, lc.grad, a.grad


MSDA_TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}


@pytest.mark.parametrize('dtype', list(MSDA_TOL))
@pytest.mark.parametrize('case', [
    dict(),  # 50x50x16, 8 heads x 32, 2000 queries
    dict(Q=250),  # the decoder's size: too few threads to fill a GPU, points over lanes
    dict(Q=40000),  # the encoder's size: one thread per (b, q, m, channel group)
    dict(B=2, Q=300, M=2, Dh=24, P=3, shapes=((20, 16, 8), (10, 8, 4))),  # reduction group 8
    dict(B=2, Q=100, M=3, Dh=3, P=2, shapes=((7, 5, 3), (3, 2, 2))),  # no shuffle reduction
])
def test_msda_3d_cuda_matches_reference(dtype, case):
    value, shapes, starts, loc, attn = _msda_inputs(dtype, **case)
    B, Q = loc.shape[:2]
    grad_out = torch.randn(B, Q, value.shape[2] * value.shape[3], device='cuda').to(dtype)
    ref = _msda_fwd_bwd('pytorch', value.float(), shapes, starts, loc, attn, grad_out.float())
    cuda = _msda_fwd_bwd(None, value, shapes, starts, loc, attn, grad_out)
    assert 'MultiScaleDeformableAttn3D' in type(cuda[0].grad_fn).__name__
    tol = MSDA_TOL[dtype]
    for name, a, b in zip(('out', 'grad_value', 'grad_loc', 'grad_attn'), cuda, ref):
        scale = b.abs().max().clamp_min(1.0)
        err = (a.float() - b).abs().max() / scale
        assert err < tol, f'{name}: max error {err:.2e} (relative to {scale:.2f})'
    assert cuda[0].dtype == cuda[1].dtype == dtype
    assert cuda[2].dtype == cuda[3].dtype == torch.float32


def test_msda_3d_cuda_gradcheck_double():
    value, shapes, starts, loc, attn = _msda_inputs(torch.float64, B=2, Q=3, M=2, Dh=4, P=2,
                                                    shapes=((4, 3, 3), (2, 2, 2)))
    loc, attn = loc.double(), attn.double()
    for t in (value, loc, attn):
        t.requires_grad_(True)
    fn = lambda v, lc, a: multi_scale_deformable_attn_3d(v, shapes, starts, lc, a)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (value, loc, attn))


def test_msda_3d_cuda_edge_cases():
    value, shapes, starts, loc, attn = _msda_inputs(torch.float32, B=2, Q=64)
    # every location outside the volume: zero output and zero location / weight gradients
    far = torch.full_like(loc, 1.5)
    out = _msda_fwd_bwd(None, value, shapes, starts, far, attn, torch.ones(2, 64, 256,
                                                                           device='cuda'))
    assert not out[0].any() and not out[1].any() and not out[2].any() and not out[3].any()
    # non-contiguous value / locations (views as produced by the attention module)
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3)
    loc_nc = loc.permute(0, 2, 1, 3, 4, 5).contiguous().permute(0, 2, 1, 3, 4, 5)
    assert not value_nc.is_contiguous() and not loc_nc.is_contiguous()
    # errors relative to each tensor's scale, as in the comparison above: element-wise, the
    # float32 grid_sample reference's location gradient differs by up to ~1e-3 (relative) on
    # a few elements for some output gradients (2 of 30 seeds on an H200, the kernels of
    # f112a97 alike: docs/benchmark_runs/ops_h200_2026-12-02/msda_edge_check.py)
    g = torch.Generator(device='cuda').manual_seed(1)
    for _ in range(3):
        grad_out = torch.randn(2, 64, 256, device='cuda', generator=g)
        ref = _msda_fwd_bwd('pytorch', value, shapes, starts, loc, attn, grad_out)
        cuda = _msda_fwd_bwd(None, value_nc, shapes, starts, loc_nc, attn, grad_out)
        for name, a, b in zip(('out', 'grad_value', 'grad_loc', 'grad_attn'), cuda, ref):
            scale = b.abs().max().clamp_min(1.0)
            assert (a - b).abs().max() / scale < 1e-4, name


@pytest.mark.parametrize('Q', [250, 40000])  # point lanes (two passes) / one pass
def test_msda_3d_cuda_graph_replays_match_eager(Q):
    """Forward + backward captured in a CUDA graph (on sm_90 the backward is a programmatic
    dependent of grad_value's zero fill) and replayed on new inputs: every replay's
    gradients equal an eager call's (a replay whose atomics ran before the fill finished
    would lose contributions), and the inputs' grads are written afresh each replay."""
    value, shapes, starts, loc, attn = _msda_inputs(torch.float32, Q=Q, seed=5)
    g = torch.Generator(device='cuda').manual_seed(6)
    grad_out = torch.randn(1, Q, 256, device='cuda', generator=g)
    v, lc, a = (t.detach().clone().requires_grad_(True) for t in (value, loc, attn))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture
        multi_scale_deformable_attn_3d(v, shapes, starts, lc, a).backward(grad_out)
    torch.cuda.current_stream().wait_stream(side)
    v.grad = lc.grad = a.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = multi_scale_deformable_attn_3d(v, shapes, starts, lc, a)
        out.backward(grad_out)
    for step in range(4):
        new_value = torch.randn(value.shape, device='cuda', generator=g)
        v.data.copy_(new_value)
        grad_out.copy_(torch.randn(grad_out.shape, device='cuda', generator=g))
        graph.replay()
        torch.cuda.synchronize()
        eager = _msda_fwd_bwd(None, new_value, shapes, starts, loc, attn, grad_out)
        for name, x, y in zip(('out', 'grad_value', 'grad_loc', 'grad_attn'),
                              (out, v.grad, lc.grad, a.grad), eager):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5, msg=f'{name}, replay {step}')


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_msda_2d_cuda_matches_mmcv_at_cross_attention_size(dtype):
    """The image cross-attention's sampling (6 cameras as the batch, 4 FPN levels of a
    704 x 256 input, 8 heads x 32, 8 points) on the 3D kernels against mmcv's CUDA kernel and
    its grid_sample reference, forward and backward."""
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction

    from trackocc.ops.msda_2d import multi_scale_deformable_attn_2d
    g = torch.Generator(device='cuda').manual_seed(3)
    shapes = torch.tensor([[32, 88], [16, 44], [8, 22], [4, 11]], device='cuda')
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    B, Q, M, Dh, L, P = 6, 500, 8, 32, 4, 8
    value = torch.randn(B, int(sizes.sum()), M, Dh, device='cuda', generator=g, dtype=dtype)
    loc = torch.rand(B, Q, M, L, P, 2, device='cuda', generator=g, dtype=dtype) * 1.2 - 0.1
    attn = torch.rand(B, Q, M, L, P, device='cuda', generator=g, dtype=dtype).softmax(-1)
    grad_out = torch.randn(B, Q, M * Dh, device='cuda', generator=g, dtype=dtype)
    fns = {
        'trackocc': lambda *x: multi_scale_deformable_attn_2d(*x),
        'mmcv': lambda v, s, st, lc, a: MultiScaleDeformableAttnFunction.apply(
            v, s, st, lc, a, 64),
        'pytorch': lambda *x: multi_scale_deformable_attn_2d(*x, impl='pytorch'),
    }
    results = {}
    for name, fn in fns.items():
        v, lc, a = (t.detach().requires_grad_(True) for t in (value, loc, attn))
        out = fn(v, shapes, starts, lc, a)
        out.backward(grad_out)
        results[name] = (out, v.grad, lc.grad, a.grad)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for other in ('mmcv', 'pytorch'):
        for what, a, b in zip(('out', 'grad_value', 'grad_loc', 'grad_attn'),
                              results['trackocc'], results[other]):
            scale = b.abs().max().clamp_min(1.0)
            err = ((a - b).abs().max() / scale).item()
            assert err < tol, f'{what} vs {other}: max error {err:.2e}'
