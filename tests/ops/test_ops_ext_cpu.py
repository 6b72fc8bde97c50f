"""Compiled CPU kernels of trackocc._ext against the pure-PyTorch references."""
import pytest
import torch

from trackocc.ops import (bev_pool_v2, ext_available, multi_scale_deformable_attn_3d,
                          pad_pooling_ranks, voxel_pooling_prepare)
from trackocc.ops import ext_loader

pytestmark = pytest.mark.skipif(not ext_available(),
                                reason='trackocc._ext not built (setup.py build_ext)')

LOWER, STEP, SIZE = (-2.0, -2.0, -1.0), (0.5, 0.5, 0.5), (8, 6, 4)


def _bev_case(dtype, B=2, N=2, D=5, H=3, W=4, C=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor([-3.0, -3.0, -2.0]), torch.tensor([3.0, 2.0, 2.0])
    coor = lo + torch.rand(B, N, D, H, W, 3, generator=g) * (hi - lo)
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    depth = torch.rand(B, N, D, H, W, generator=g).to(dtype)
    feat = torch.randn(B, N, H, W, C, generator=g).to(dtype)
    shape = (B, SIZE[2], SIZE[1], SIZE[0], C)
    return depth, feat, r, shape


def _run_bev(impl, depth, feat, r, shape, grad_out):
    d, f = depth.clone().requires_grad_(True), feat.clone().requires_grad_(True)
    out = bev_pool_v2(d, f, *r[:3], shape, *r[3:], impl=impl)
    out.backward(grad_out)
    return out, d.grad, f.grad


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5),
                                       (torch.bfloat16, 3e-2)])
def test_bev_pool_cpp_matches_reference(dtype, tol):
    depth, feat, r, shape = _bev_case(dtype)
    grad_out = torch.randn(shape[0], shape[4], *shape[1:4]).to(dtype)
    ref = _run_bev('pytorch', depth, feat, r, shape, grad_out)
    ext = _run_bev('ext', depth, feat, r, shape, grad_out)
    for a, b in zip(ext, ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)


def test_bev_pool_cpp_gradcheck_and_empty():
    depth, feat, r, shape = _bev_case(torch.float64, B=1, N=1, D=3, H=2, W=2, C=2)
    depth.requires_grad_(True)
    feat.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda d, f: bev_pool_v2(d, f, *r[:3], shape, *r[3:], impl='ext'), (depth, feat))
    empty = [t[:0] for t in r]
    out = bev_pool_v2(depth, feat, *empty[:3], shape, *empty[3:], impl='ext')
    assert out.shape == (1, 2, 4, 6, 8) and not out.any()


def test_bev_pool_cpp_skips_padding():
    """Fixed-size ranks (:func:`pad_pooling_ranks`): the empty padding intervals write
    nothing: they start at point 0, whose voxel holds a sum, which they would overwrite."""
    depth, feat, r, shape = _bev_case(torch.float32)
    padded = pad_pooling_ranks(r, depth.numel(), depth.numel())
    ref = bev_pool_v2(depth, feat, *r[:3], shape, *r[3:], impl='pytorch')
    out = bev_pool_v2(depth, feat, *padded[:3], shape, *padded[3:], impl='ext')
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _msda_case(dtype, B=2, Q=5, M=2, Dh=4, P=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[5, 4, 3], [3, 2, 2]])
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(B, int(sizes.sum()), M, Dh, generator=g).to(dtype)
    loc = (torch.rand(B, Q, M, 2, P, 3, generator=g) * 1.4 - 0.2).to(dtype)
    attn = torch.rand(B, Q, M, 2, P, generator=g).softmax(-1).to(dtype)
    return value, shapes, starts, loc, attn


def _run_msda(impl, value, shapes, starts, loc, attn, grad_out):
    v, lc, a = (t.clone().requires_grad_(True) for t in (value, loc, attn))
    out = multi_scale_deformable_attn_3d(v, shapes, starts, lc, a, impl=impl)
    out.backward(grad_out)
    return out, v.grad, lc.grad, a.grad


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-4),
                                       (torch.bfloat16, 3e-2)])
def test_msda_3d_cpp_matches_reference(dtype, tol):
    value, shapes, starts, loc, attn = _msda_case(dtype)
    if dtype == torch.bfloat16:  # locations and weights stay float32 for bf16 values
        loc, attn = loc.float(), attn.float()
    grad_out = torch.randn(2, 5, 8).to(dtype)
    # reference in float32 (float64 for float64) on the same rounded values
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    ref = _run_msda('pytorch', value.to(ref_dtype), shapes, starts, loc.to(ref_dtype),
                    attn.to(ref_dtype), grad_out.to(ref_dtype))
    ext = _run_msda('ext', value, shapes, starts, loc, attn, grad_out)
    assert ext[0].dtype == ext[1].dtype == dtype and ext[2].dtype == loc.dtype
    for a, b in zip(ext, ref):
        torch.testing.assert_close(a.to(ref_dtype), b, rtol=tol, atol=tol)


def test_msda_3d_cpp_gradcheck():
    value, shapes, starts, loc, attn = _msda_case(torch.float64, B=1, Q=2, Dh=2, P=2)
    for t in (value, loc, attn):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, lc, a: multi_scale_deformable_attn_3d(v, shapes, starts, lc, a, impl='ext'),
        (value, loc, attn))


def _msda_2d_case(dtype, B=2, Q=6, M=2, Dh=4, P=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[6, 5], [3, 2]])  # (h, w) of two image levels
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(B, int(sizes.sum()), M, Dh, generator=g).to(dtype)
    loc = (torch.rand(B, Q, M, 2, P, 2, generator=g) * 1.4 - 0.2).to(dtype)  # some outside
    attn = torch.rand(B, Q, M, 2, P, generator=g).softmax(-1).to(dtype)
    return value, shapes, starts, loc, attn


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_msda_2d_on_3d_kernels_matches_mmcv_reference(dtype, tol):
    """mmcv's grid_sample reference against the 3D kernels with one-voxel-deep levels."""
    from trackocc.ops.msda_2d import multi_scale_deformable_attn_2d
    value, shapes, starts, loc, attn = _msda_2d_case(dtype)
    grad_out = torch.randn(2, 6, 8, dtype=dtype)
    results = {}
    for impl in ('pytorch', 'ext'):
        v, lc, a = (t.clone().requires_grad_(True) for t in (value, loc, attn))
        out = multi_scale_deformable_attn_2d(v, shapes, starts, lc, a, impl=impl)
        out.backward(grad_out)
        results[impl] = (out, v.grad, lc.grad, a.grad)
    assert results['ext'][0].abs().sum() > 0 and results['ext'][2].abs().sum() > 0
    assert 'MultiScaleDeformableAttn3D' in type(results['ext'][0].grad_fn).__name__
    # impl=None on CPU is the reference, as for every trackocc op; unknown names are refused
    assert torch.equal(multi_scale_deformable_attn_2d(value, shapes, starts, loc, attn),
                       results['pytorch'][0].detach())
    with pytest.raises(ValueError, match='impl'):
        multi_scale_deformable_attn_2d(value, shapes, starts, loc, attn, impl='cuda')
    for name, a, b in zip(('out', 'grad_value', 'grad_loc', 'grad_attn'), results['ext'],
                          results['pytorch']):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)


def test_missing_cuda_gives_clear_error(monkeypatch):
    if ext_loader.ext_with_cuda():
        pytest.skip('extension has CUDA kernels')
    with pytest.raises(RuntimeError, match='built without CUDA'):
        ext_loader.require_cuda_ext('bev_pool_v2', 'bev_pool_v2_forward')
    monkeypatch.setattr(ext_loader, '_EXT', None)
    monkeypatch.setattr(ext_loader, '_EXT_ERROR', ImportError('no module'))
    with pytest.raises(RuntimeError, match='not available'):
        ext_loader.require_ext('bev_pool_v2', 'bev_pool_v2_forward')
