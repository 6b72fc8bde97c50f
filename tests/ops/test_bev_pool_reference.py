"""bev_pool_v2 pure-PyTorch reference and voxel_pooling_prepare against naive loops."""
import itertools

import pytest
import torch

from trackocc.ops import (bev_pool_v2, bev_pool_v2_pytorch, pad_pooling_ranks,
                          voxel_pooling_prepare)

LOWER, STEP, SIZE = (-2.0, -2.0, -1.0), (1.0, 1.0, 1.0), (4, 3, 2)  # X, Y, Z


def _random_case(B=2, N=2, D=3, H=2, W=3, C=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # coordinates spread a bit beyond the grid so that some points fall outside
    coor = torch.rand(B, N, D, H, W, 3, generator=g, dtype=dtype)
    lo, hi = torch.tensor([-3.0, -3.0, -2.0]), torch.tensor([3.0, 2.0, 2.0])
    coor = lo + coor * (hi - lo)
    depth = torch.rand(B, N, D, H, W, generator=g, dtype=dtype)
    feat = torch.randn(B, N, H, W, C, generator=g, dtype=dtype)
    return coor, depth, feat


def _naive_pool(coor, depth, feat, floor=True):
    B, N, D, H, W, _ = coor.shape
    C = feat.shape[-1]
    X, Y, Z = SIZE
    out = torch.zeros(B, C, Z, Y, X, dtype=feat.dtype)
    for b, n, d, h, w in itertools.product(range(B), range(N), range(D), range(H), range(W)):
        ijk = []
        for a in range(3):
            v = (coor[b, n, d, h, w, a].item() - LOWER[a]) / STEP[a]
            ijk.append(int(torch.tensor(v).floor()) if floor else int(v))
        i, j, k = ijk
        if 0 <= i < X and 0 <= j < Y and 0 <= k < Z:
            out[b, :, k, j, i] += depth[b, n, d, h, w] * feat[b, n, h, w]
    return out


def _pool(coor, depth, feat, **kw):
    ranks = voxel_pooling_prepare(coor, LOWER, STEP, SIZE, **kw)
    shape = (coor.shape[0], SIZE[2], SIZE[1], SIZE[0], feat.shape[-1])
    return bev_pool_v2(depth, feat, ranks.ranks_depth, ranks.ranks_feat, ranks.ranks_bev,
                       shape, ranks.interval_starts, ranks.interval_lengths), ranks


@pytest.mark.parametrize('seed', [0, 1])
def test_matches_naive_loop(seed):
    coor, depth, feat = _random_case(seed=seed)
    out, ranks = _pool(coor, depth, feat)
    expected = _naive_pool(coor, depth, feat)
    assert out.shape == (2, 4, 2, 3, 4)
    torch.testing.assert_close(out, expected)
    # some points were outside the grid and several shared a voxel
    assert 0 < ranks.ranks_depth.numel() < depth.numel()
    assert ranks.interval_starts.numel() < ranks.ranks_depth.numel()


def test_ranks_sorted_and_intervals_consistent():
    coor, _, _ = _random_case()
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    assert all(t.dtype == torch.int32 for t in r)
    assert torch.all(r.ranks_bev[1:] >= r.ranks_bev[:-1])
    assert int(r.interval_lengths.sum()) == r.ranks_bev.numel()
    starts, lengths = r.interval_starts.long(), r.interval_lengths.long()
    for s, n in zip(starts.tolist(), lengths.tolist()):
        assert torch.all(r.ranks_bev[s:s + n] == r.ranks_bev[s])
    # consecutive intervals hold different voxels
    assert torch.all(r.ranks_bev[starts[1:]] != r.ranks_bev[starts[:-1]])


def test_trunc_toward_zero_keeps_points_just_below_the_grid():
    coor = torch.zeros(1, 1, 1, 1, 1, 3, dtype=torch.float64)
    coor[..., :] = torch.tensor([-2.5, 0.2, 0.3])  # x is half a voxel below the lower bound
    assert voxel_pooling_prepare(coor, LOWER, STEP, SIZE).ranks_bev.numel() == 0
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE, trunc_toward_zero=True)
    assert r.ranks_bev.tolist() == [(1 * 3 + 2) * 4 + 0]


def test_known_answer_and_gradients():
    # two voxels, each receiving two points; values chosen by hand
    depth = torch.tensor([0.3, 0.4, 0.2, 0.1, 0.7, 0.6, 0.8, 0.9]).view(1, 1, 2, 2, 2)
    feat = torch.ones(1, 1, 2, 2, 2)
    depth.requires_grad_(True)
    feat.requires_grad_(True)
    ranks_depth = torch.tensor([0, 4, 1, 6], dtype=torch.int32)
    ranks_feat = torch.tensor([0, 0, 1, 2], dtype=torch.int32)
    ranks_bev = torch.tensor([0, 0, 1, 1], dtype=torch.int32)
    starts = torch.tensor([0, 2], dtype=torch.int32)
    lengths = torch.tensor([2, 2], dtype=torch.int32)
    out = bev_pool_v2(depth, feat, ranks_depth, ranks_feat, ranks_bev, (1, 1, 2, 2, 2),
                      starts, lengths)
    out.sum().backward()
    # voxel 0: 0.3 + 0.7, voxel 1: 0.4 + 0.8, two channels each
    assert out.sum().item() == pytest.approx(4.4)
    torch.testing.assert_close(depth.grad.flatten(),
                               torch.tensor([2., 2., 0., 0., 2., 0., 2., 0.]))
    torch.testing.assert_close(feat.grad.flatten(),
                               torch.tensor([1.0, 1.0, 0.4, 0.4, 0.8, 0.8, 0., 0.]))


def test_only_points_inside_intervals_are_pooled():
    depth = torch.ones(1, 1, 4, 1, 1)
    feat = torch.ones(1, 1, 1, 1, 1)
    r = [torch.tensor(v, dtype=torch.int32) for v in ([0, 1, 2, 3], [0, 0, 0, 0], [0, 0, 1, 1])]
    out = bev_pool_v2(depth, feat, *r, (1, 1, 1, 2, 1), torch.tensor([0], dtype=torch.int32),
                      torch.tensor([2], dtype=torch.int32))
    assert out.flatten().tolist() == [2.0, 0.0]


def test_empty_grid_gives_zeros_with_gradient_path():
    coor = torch.full((1, 1, 2, 1, 1, 3), 100.0, dtype=torch.float64)
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    assert r.ranks_bev.numel() == 0 and r.interval_starts.numel() == 0
    depth = torch.rand(1, 1, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    feat = torch.rand(1, 1, 1, 1, 3, dtype=torch.float64, requires_grad=True)
    out = bev_pool_v2(depth, feat, *r[:3], (1, 2, 3, 4, 3), *r[3:])
    assert out.shape == (1, 3, 2, 3, 4) and not out.any()
    out.sum().backward()
    assert not depth.grad.any() and not feat.grad.any()


def test_gradcheck_double():
    coor, depth, feat = _random_case(B=1, N=2, D=3, H=2, W=2, C=3)
    r = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    depth.requires_grad_(True)
    feat.requires_grad_(True)
    fn = lambda d, f: bev_pool_v2_pytorch(d, f, *r[:3], (1, 2, 3, 4, 3), *r[3:])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (depth, feat))


def test_bad_inputs_raise_clear_errors():
    depth, feat = torch.rand(1, 1, 2, 2, 2), torch.rand(1, 1, 2, 3, 4)
    r = [torch.zeros(1, dtype=torch.int32)] * 5
    with pytest.raises(ValueError, match='disagree'):
        bev_pool_v2(depth, feat, *r[:3], (1, 1, 1, 1, 4), *r[3:])
    with pytest.raises(ValueError, match='bev_feat_shape'):
        bev_pool_v2(depth, torch.rand(1, 1, 2, 2, 4), *r[:3], (1, 1, 1, 1, 3), *r[3:])
    with pytest.raises(ValueError, match='integer'):
        bev_pool_v2(depth, torch.rand(1, 1, 2, 2, 4), *r[:2], torch.zeros(1),
                    (1, 1, 1, 1, 4), *r[3:])
    with pytest.raises(ValueError, match='coor must be'):
        voxel_pooling_prepare(torch.rand(2, 3), LOWER, STEP, SIZE)


def test_reference_pools_only_points_inside_the_intervals():
    """Intervals that skip points, are empty, or end early: only their points are pooled,
    each into the voxel of its interval's first point (the kernels' contract)."""
    g = torch.Generator().manual_seed(3)
    depth = torch.rand(1, 1, 2, 2, 2, generator=g, dtype=torch.float64)  # 8 depth entries
    feat = torch.randn(1, 1, 2, 2, 3, generator=g, dtype=torch.float64)  # 4 pixels, C = 3
    ranks_depth = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    ranks_feat = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    ranks_bev = torch.tensor([0, 0, 5, 5, 5, 7, 9])
    starts, lengths = torch.tensor([0, 2, 3, 6]), torch.tensor([2, 0, 2, 1])
    expect = torch.zeros(24, 3, dtype=torch.float64)
    for s, n in zip(starts.tolist(), lengths.tolist()):
        for p in range(s, s + n):
            expect[ranks_bev[s]] += depth.flatten()[ranks_depth[p]] * \
                feat.reshape(-1, 3)[ranks_feat[p]]
    out = bev_pool_v2_pytorch(depth, feat, ranks_depth, ranks_feat, ranks_bev, (1, 2, 3, 4, 3),
                              starts, lengths)
    torch.testing.assert_close(out, expect.view(1, 2, 3, 4, 3).permute(0, 4, 1, 2, 3))
    with pytest.raises(ValueError, match='intervals hold 9 points'):
        bev_pool_v2_pytorch(depth, feat, ranks_depth, ranks_feat, ranks_bev, (1, 2, 3, 4, 3),
                            starts, torch.tensor([2, 0, 2, 5]))


def _former_prepare(coor, lower, step, size, trunc_toward_zero=False):
    """voxel_pooling_prepare before the sync-reduced form: bool masks and nonzero."""
    B, N, D, H, W, _ = coor.shape
    idx = (coor.reshape(-1, 3) - torch.tensor(lower, dtype=coor.dtype)) / torch.tensor(
        step, dtype=coor.dtype)
    idx = (idx.trunc() if trunc_toward_zero else idx.floor()).long()
    num_points = idx.shape[0]
    ranks_depth = torch.arange(num_points)
    ranks_feat = torch.arange(B * N * H * W).view(B, N, 1, H, W).expand(B, N, D, H, W)
    ranks_feat = ranks_feat.reshape(-1)
    batch = torch.arange(B).repeat_interleave(num_points // B)
    inside = ((idx >= 0) & (idx < torch.tensor(size))).all(dim=1)
    idx, batch = idx[inside], batch[inside]
    ranks_depth, ranks_feat = ranks_depth[inside], ranks_feat[inside]
    X, Y, Z = size
    ranks_bev = ((batch * Z + idx[:, 2]) * Y + idx[:, 1]) * X + idx[:, 0]
    order = torch.argsort(ranks_bev, stable=True)
    ranks_bev, ranks_depth, ranks_feat = ranks_bev[order], ranks_depth[order], ranks_feat[order]
    new_run = torch.ones_like(ranks_bev, dtype=torch.bool)
    new_run[1:] = ranks_bev[1:] != ranks_bev[:-1]
    starts = torch.nonzero(new_run, as_tuple=True)[0]
    ends = torch.cat([starts[1:], torch.tensor([ranks_bev.numel()])])
    return ranks_depth, ranks_feat, ranks_bev, starts, ends - starts


@pytest.mark.parametrize('case', ['mixed', 'all_inside', 'one_voxel', 'trunc', 'none_inside'])
def test_prepare_equals_the_former_masked_form(case):
    """Outside points sorted to a tail instead of bool-mask indexing: the same ranks and
    intervals, bit for bit (integers)."""
    coor, _, _ = _random_case(B=2, N=3, D=4, H=2, W=3, seed=7)
    if case == 'all_inside':
        coor = coor.clamp(min=torch.tensor([-1.9, -1.9, -0.9], dtype=coor.dtype),
                          max=torch.tensor([1.9, 0.9, 0.9], dtype=coor.dtype))
    elif case == 'one_voxel':
        coor = torch.full_like(coor, 0.5)
    elif case == 'none_inside':
        coor = coor + 10.0
    kw = dict(trunc_toward_zero=case == 'trunc')
    new = voxel_pooling_prepare(coor, LOWER, STEP, SIZE, **kw)
    old = _former_prepare(coor, LOWER, STEP, SIZE, **kw)
    for name, a, b in zip(new._fields, new, old):
        assert a.dtype == torch.int32 and a.is_contiguous(), name
        assert torch.equal(a.long(), b), name


def test_padded_ranks_pool_as_the_unpadded_ones():
    """Padding points lie in no interval and padding intervals are empty: same output; a
    second rig written into the same buffers keeps their addresses."""
    coor, depth, feat = _random_case()
    shape = (coor.shape[0], SIZE[2], SIZE[1], SIZE[0], feat.shape[-1])
    ranks = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    num = depth.numel()
    padded = pad_pooling_ranks(ranks, num, num)
    assert all(t.shape == (num,) and t.dtype == torch.int32 for t in padded)
    assert not padded.interval_lengths[ranks.interval_lengths.numel():].any()
    out = bev_pool_v2_pytorch(depth, feat, *padded[:3], shape, *padded[3:])
    torch.testing.assert_close(out, _naive_pool(coor, depth, feat))
    ptrs = [t.data_ptr() for t in padded]
    other = voxel_pooling_prepare(coor.flip(2), LOWER, STEP, SIZE)
    again = pad_pooling_ranks(other, num, num, out=padded)
    assert again is padded and [t.data_ptr() for t in again] == ptrs
    out = bev_pool_v2_pytorch(depth, feat, *again[:3], shape, *again[3:])
    torch.testing.assert_close(out, _naive_pool(coor.flip(2), depth, feat))


def test_padding_that_does_not_fit_is_refused():
    coor, depth, _ = _random_case()
    ranks = voxel_pooling_prepare(coor, LOWER, STEP, SIZE)
    with pytest.raises(ValueError, match='do not fit'):
        pad_pooling_ranks(ranks, ranks.ranks_bev.numel() - 1, depth.numel())
    with pytest.raises(ValueError, match='int32 out buffers'):
        pad_pooling_ranks(ranks, depth.numel(), depth.numel(),
                          out=pad_pooling_ranks(ranks, depth.numel() + 1, depth.numel()))
