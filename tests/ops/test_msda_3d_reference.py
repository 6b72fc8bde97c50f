"""3D multi-scale deformable attention reference against an explicit trilinear loop."""
import itertools
import math

import pytest
import torch

from trackocc.ops import multi_scale_deformable_attn_3d, multi_scale_deformable_attn_3d_pytorch

SHAPES = [(4, 3, 2), (2, 2, 1)]  # (X, Y, Z) per level


def _inputs(B=2, Q=3, M=2, Dh=3, P=2, dtype=torch.float64, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(SHAPES, dtype=torch.long)
    sizes = shapes.prod(1)
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    L = len(SHAPES)
    value = torch.randn(B, int(sizes.sum()), M, Dh, generator=g, dtype=dtype)
    # locations reach a bit outside [0, 1] to exercise zero padding
    loc = torch.rand(B, Q, M, L, P, 3, generator=g, dtype=dtype) * (1 + 2 * spread) - spread
    attn = torch.rand(B, Q, M, L, P, generator=g, dtype=dtype)
    attn = attn / attn.sum(dim=(-1, -2), keepdim=True)
    return value, shapes, starts, loc, attn


def _trilinear(vol, x, y, z):
    """vol (X, Y, Z, Dh); (x, y, z) in voxel units, align_corners=False, zero padding."""
    X, Y, Z, Dh = vol.shape
    out = torch.zeros(Dh, dtype=vol.dtype)
    x0, y0, z0 = math.floor(x), math.floor(y), math.floor(z)
    for i, j, k in itertools.product((0, 1), repeat=3):
        xi, yj, zk = x0 + i, y0 + j, z0 + k
        w = ((1 - abs(x - xi)) * (1 - abs(y - yj)) * (1 - abs(z - zk)))
        if 0 <= xi < X and 0 <= yj < Y and 0 <= zk < Z:
            out += w * vol[xi, yj, zk]
    return out


def _naive(value, shapes, starts, loc, attn):
    B, S, M, Dh = value.shape
    _, Q, _, L, P, _ = loc.shape
    out = torch.zeros(B, Q, M, Dh, dtype=value.dtype)
    for b, q, m, lvl, p in itertools.product(range(B), range(Q), range(M), range(L), range(P)):
        X, Y, Z = shapes[lvl].tolist()
        s = int(starts[lvl])
        vol = value[b, s:s + X * Y * Z, m].reshape(X, Y, Z, Dh)
        x, y, z = loc[b, q, m, lvl, p].tolist()
        out[b, q, m] += attn[b, q, m, lvl, p] * _trilinear(vol, x * X - 0.5, y * Y - 0.5,
                                                           z * Z - 0.5)
    return out.reshape(B, Q, M * Dh)


@pytest.mark.parametrize('seed', [0, 1])
def test_matches_naive_trilinear_loop(seed):
    args = _inputs(seed=seed)
    out = multi_scale_deformable_attn_3d(*args)
    assert out.shape == (2, 3, 6)
    torch.testing.assert_close(out, _naive(*args))


def test_axis_order_is_x_y_z():
    # a value volume that only varies along X: sampling moves with location component 0
    X, Y, Z = 4, 3, 2
    vol = torch.arange(X, dtype=torch.float64).view(X, 1, 1).expand(X, Y, Z)
    value = vol.reshape(1, X * Y * Z, 1, 1)
    shapes = torch.tensor([[X, Y, Z]])
    starts = torch.tensor([0])
    loc = torch.tensor([(i + 0.5) / X for i in range(X)], dtype=torch.float64)
    loc = torch.stack([loc, torch.full_like(loc, 0.5), torch.full_like(loc, 0.5)], -1)
    loc = loc.view(1, X, 1, 1, 1, 3)
    attn = torch.ones(1, X, 1, 1, 1, dtype=torch.float64)
    out = multi_scale_deformable_attn_3d(value, shapes, starts, loc, attn)
    assert out.flatten().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_outside_locations_read_zero():
    value, shapes, starts, loc, attn = _inputs()
    loc = torch.full_like(loc, 2.0)
    assert not multi_scale_deformable_attn_3d(value, shapes, starts, loc, attn).any()


def test_gradcheck_double():
    value, shapes, starts, loc, attn = _inputs(B=1, Q=2, M=2, Dh=2, P=2, spread=0.2)
    # keep locations away from voxel-centre kinks where trilinear is not differentiable
    for t in (value, loc, attn):
        t.requires_grad_(True)
    fn = lambda v, lc, a: multi_scale_deformable_attn_3d_pytorch(v, shapes, starts, lc, a)  # noqa
    assert torch.autograd.gradcheck(fn, (value, loc, attn))


def test_float32_and_bad_inputs():
    value, shapes, starts, loc, attn = _inputs(dtype=torch.float32)
    out = multi_scale_deformable_attn_3d(value, shapes, starts, loc, attn)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match='attention_weights'):
        multi_scale_deformable_attn_3d(value, shapes, starts, loc, attn[..., :1])
    with pytest.raises(ValueError, match='do not cover'):
        multi_scale_deformable_attn_3d(value[:, :-1], shapes, starts, loc, attn)
    with pytest.raises(ValueError, match='spatial_shapes'):
        multi_scale_deformable_attn_3d(value, shapes[:, :2], starts, loc, attn)
    with pytest.raises(ValueError, match='impl'):
        multi_scale_deformable_attn_3d(value, shapes, starts, loc, attn, impl='cuda')
