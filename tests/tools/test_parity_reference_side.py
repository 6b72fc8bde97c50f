"""Reference-side pieces of the parity harness (tools/parity) that run without the original:
the CPU stand-in for the original's CUDA-only bev_pool_v2 extension, the shared config-variant
overrides and the dump's sampling scheme."""
import ast
import os.path as osp
import sys

import pytest
import torch

PARITY = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'parity')
if PARITY not in sys.path:
    sys.path.insert(0, PARITY)

import dump_format  # noqa: E402
import ref_ops  # noqa: E402
import small_config  # noqa: E402
from trackocc.ops.bev_pool import bev_pool_v2_pytorch, voxel_pooling_prepare  # noqa: E402


def _frustum_case(seed, B=1, N=2, D=5, H=3, W=4, C=6, grid=(4, 5, 3)):
    g = torch.Generator().manual_seed(seed)
    coor = torch.rand(B, N, D, H, W, 3, generator=g) * torch.tensor(grid) * 1.3 - 0.5
    ranks = voxel_pooling_prepare(coor, (0., 0., 0.), (1., 1., 1.), grid, trunc_toward_zero=True)
    depth = torch.rand(B, N, D, H, W, generator=g)
    feat = torch.randn(B, N, H, W, C, generator=g)
    X, Y, Z = grid
    return depth, feat, ranks, (B, Z, Y, X, C)


def _brute_force(depth, feat, ranks, shape):
    out = torch.zeros(shape, dtype=torch.float64)
    flat = out.view(-1, shape[-1])
    d, f = depth.reshape(-1).double(), feat.reshape(-1, shape[-1]).double()
    for s, n in zip(ranks.interval_starts.tolist(), ranks.interval_lengths.tolist()):
        for i in range(s, s + n):
            flat[ranks.ranks_bev[s]] += d[ranks.ranks_depth[i]] * f[ranks.ranks_feat[i]]
    return out


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_cpu_bev_pool_forward_matches_loop_and_trackocc_reference(seed):
    depth, feat, r, shape = _frustum_case(seed)
    assert r.ranks_bev.numel() > 10 and r.interval_starts.numel() > 3
    out = torch.zeros(shape)
    ref_ops.bev_pool_v2_forward(depth, feat, out, r.ranks_depth, r.ranks_feat, r.ranks_bev,
                                r.interval_lengths, r.interval_starts)
    torch.testing.assert_close(out.double(), _brute_force(depth, feat, r, shape),
                               rtol=1e-5, atol=1e-5)
    ours = bev_pool_v2_pytorch(depth, feat, r.ranks_depth, r.ranks_feat, r.ranks_bev, shape,
                               r.interval_starts, r.interval_lengths)  # (B, C, Z, Y, X)
    torch.testing.assert_close(out.permute(0, 4, 1, 2, 3), ours, rtol=1e-5, atol=1e-6)
    # voxels no point falls into stay zero (the kernel writes occupied voxels only)
    hit = torch.zeros(out.shape[:-1].numel(), dtype=torch.bool)
    hit[r.ranks_bev.long()] = True
    assert out.view(-1, shape[-1])[~hit].abs().sum() == 0 and (~hit).any()


def test_cpu_bev_pool_backward_matches_autograd():
    depth, feat, r, shape = _frustum_case(3)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    # autograd of trackocc's reference, channel-last output like the kernel's
    d_ref, f_ref = depth.clone().requires_grad_(), feat.clone().requires_grad_()
    out = bev_pool_v2_pytorch(d_ref, f_ref, r.ranks_depth, r.ranks_feat, r.ranks_bev, shape,
                              r.interval_starts, r.interval_lengths).permute(0, 2, 3, 4, 1)
    (out * grad_out).sum().backward()
    # the extension's backward contract: points re-sorted by ranks_feat, runs of equal
    # ranks_feat as the intervals, the arguments in the kernel's order
    order = torch.argsort(r.ranks_feat.long(), stable=True)
    rf, rd, rb = r.ranks_feat[order], r.ranks_depth[order], r.ranks_bev[order]
    new = torch.ones_like(rf, dtype=torch.bool)
    new[1:] = rf[1:] != rf[:-1]
    starts = torch.nonzero(new)[:, 0]
    lengths = torch.diff(torch.cat([starts, starts.new_tensor([rf.numel()])]))
    depth_grad, feat_grad = torch.zeros_like(depth), torch.zeros_like(feat)
    ref_ops.bev_pool_v2_backward(grad_out, depth_grad, feat_grad, depth, feat, rd, rf, rb,
                                 lengths.int(), starts.int())
    torch.testing.assert_close(depth_grad, d_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feat_grad, f_ref.grad, rtol=1e-5, atol=1e-6)


def test_cpu_bev_pool_rejects_what_the_kernel_cannot_read():
    depth, feat, r, shape = _frustum_case(4)
    out = torch.zeros(shape)
    with pytest.raises(TypeError, match='int32'):
        ref_ops.bev_pool_v2_forward(depth, feat, out, r.ranks_depth.long(), r.ranks_feat,
                                    r.ranks_bev, r.interval_lengths, r.interval_starts)
    with pytest.raises(TypeError, match='float32'):
        ref_ops.bev_pool_v2_forward(depth.double(), feat, out, r.ranks_depth, r.ranks_feat,
                                    r.ranks_bev, r.interval_lengths, r.interval_starts)


def test_install_cpu_ops_registers_the_extension_module():
    saved = sys.modules.pop(ref_ops.EXT_MODULE, None)
    try:
        mod = ref_ops.install_cpu_ops()
        assert sys.modules[ref_ops.EXT_MODULE] is mod
        assert mod.bev_pool_v2_forward is ref_ops.bev_pool_v2_forward
        assert mod.bev_pool_v2_backward is ref_ops.bev_pool_v2_backward
    finally:
        sys.modules.pop(ref_ops.EXT_MODULE, None)
        if saved is not None:
            sys.modules[ref_ops.EXT_MODULE] = saved


def test_gen_dx_bx_cpu_matches_the_grid():
    dx, bx, nx = ref_ops._gen_dx_bx_cpu([-40, 40, 0.4], [-40, 40, 0.4], [-1, 5.4, 0.4])
    assert dx.device.type == 'cpu'
    torch.testing.assert_close(dx, torch.tensor([0.4, 0.4, 0.4]))
    torch.testing.assert_close(bx, torch.tensor([-39.8, -39.8, -0.8]))
    torch.testing.assert_close(nx, torch.tensor([200., 200., 16.]))


CONFIG = """num_queries = 200
_dim_ = 256
_ffn_dim_ = _dim_ * 2
data_config = {
    'cams': ['A', 'B'],
    'input_size': (256, 704),
}
model = dict(num_query=num_queries, dims=_dim_, ffn=_ffn_dim_,
             size=data_config['input_size'], head=dict(width=256, depth=2))
"""


def test_apply_overrides_propagates_to_derived_values():
    text = small_config.apply_overrides(
        CONFIG, {'_dim_': 128, 'num_queries': 50, 'data_config.input_size': (128, 352),
                 'model.head.width': 128})
    ns = {}
    exec(compile(text, '<cfg>', 'exec'), ns)
    assert ns['model'] == dict(num_query=50, dims=128, ffn=256, size=(128, 352),
                               head=dict(width=128, depth=2))
    assert ns['data_config']['cams'] == ['A', 'B']
    assert small_config.apply_overrides(CONFIG, {}) == CONFIG


def test_apply_overrides_errors():
    with pytest.raises(KeyError, match='nope'):
        small_config.apply_overrides(CONFIG, {'nope': 1})
    with pytest.raises(ValueError, match='literal'):
        small_config.apply_overrides(CONFIG, {'_dim_': object()})


def test_small_variant_is_consistent():
    small = small_config.overrides_of('small')
    assert sum(small['_pos_dim_']) == small['_dim_']  # positional encoding fills the width
    assert small['_dim_'] % 8 == 0  # 8 attention heads
    assert small_config.overrides_of('paper') == {}
    for v in small.values():
        ast.literal_eval(repr(v))
    with pytest.raises(KeyError):
        small_config.overrides_of('huge')


@pytest.mark.parametrize('numel,count', [(10, 20), (1000, 100), (640000, 4096),
                                         (2 ** 20, 1000), (3 * 5 * 7 * 11 * 13, 500)])
def test_sample_indices_distinct_in_range_and_equal_in_torch(numel, count):
    idx = dump_format.sample_indices(numel, count)
    assert len(idx) == min(numel, count)
    assert len(set(idx)) == len(idx)
    assert all(0 <= i < numel for i in idx)
    assert dump_format.sample_index_tensor(numel, count).tolist() == idx
    if count < numel:  # spread over the whole tensor, not a prefix
        assert max(idx) > numel * 0.9 and min(idx) == 0


def _recorder(max_elements=64):
    import dump_reference
    rec = dump_reference.Recorder(max_elements)
    rec.prefix = 'test/f0/'
    return dump_reference, rec


def test_recorder_samples_large_float_tensors_and_keeps_inputs_full():
    mod, rec = _recorder()
    x = torch.arange(1000, dtype=torch.float32).view(10, 100) - 500
    x[3, 7] = float('nan')
    rec.put('stage', x)
    rec.put('input/img', x.clone())
    rec.put('ids', torch.arange(1000))
    rec.put('nested', {'a': [x[:2, :2], None], 'b': 3})
    t, s = rec.tensors, rec.sampled
    assert set(s) == {'test/f0/stage'}
    info = s['test/f0/stage']
    idx = dump_format.sample_indices(1000, 64, info['multiplier'])
    torch.testing.assert_close(t['test/f0/stage'], x.reshape(-1)[idx], equal_nan=True)
    assert info['shape'] == [10, 100] and info['count'] == 64 and info['num_nan'] == 1
    finite = x[~torch.isnan(x)].double()
    assert info['sum'] == pytest.approx(float(finite.sum()))
    assert info['abs_sum'] == pytest.approx(float(finite.abs().sum()))
    assert info['abs_max'] == 500.0
    assert t['test/f0/input/img'].shape == (10, 100)  # inputs are never sampled
    assert t['test/f0/ids'].shape == (1000,)  # integer tensors are never sampled
    assert t['test/f0/nested/a/0'].shape == (2, 2) and t['test/f0/nested/b'].item() == 3
    assert 'test/f0/nested/a/1' not in t
    with pytest.raises(KeyError, match='twice'):
        rec.put('ids', torch.zeros(1))
    rec.prefix = None
    with pytest.raises(RuntimeError, match='outside of a frame'):
        rec.put('late', torch.zeros(1))


def test_dump_meta_is_plain():
    mod, _ = _recorder()

    class Version(str):
        pass
    import numpy as np
    out = mod.plain({'v': Version('1.12.1'), 't': (1, np.int64(2), np.float32(0.5)), 'n': None})
    assert out == {'v': '1.12.1', 't': [1, 2, 0.5], 'n': None}
    assert type(out['v']) is str and type(out['t'][1]) is int
    with pytest.raises(TypeError):
        mod.plain({'x': object()})
