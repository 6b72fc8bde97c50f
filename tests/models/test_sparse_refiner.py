"""SparseVoxelRefiner (spconv, CPU Native algorithm) against a masked dense equivalent."""
import pytest
import torch
import torch.nn.functional as F

spconv = pytest.importorskip('spconv.pytorch')

from trackocc.registry import MODELS  # noqa: E402

from trackocc.models.refiners import (DenseVoxelRefiner, SparseVoxelRefiner,  # noqa: E402
                                      occupied_from_semantics)


def _case(B=2, C=6, shape=(9, 8, 4), p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, C, *shape, generator=g)
    occupied = torch.rand(B, *shape, generator=g) < p
    return feats, occupied


def _randomize(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _masked_dense_reference(model, feats, occupied):
    """The sparse network written densely: convs only read and write occupied voxels."""
    mask = occupied[:, None].to(feats.dtype)

    def lin(layer, x):  # a Linear applied per voxel
        return torch.einsum('oc,bcxyz->boxyz', layer.weight, x) + layer.bias.view(1, -1, 1, 1, 1)

    def subm(conv, x):  # spconv weight (out, kx, ky, kz, in) -> Conv3d (out, in, kx, ky, kz)
        w = conv.weight.permute(0, 4, 1, 2, 3)
        return F.conv3d(x * mask, w, conv.bias, padding=1) * mask

    def bn(norm, x):
        return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                            False, 0.0, norm.eps) * mask

    x = lin(model.in_proj, feats) * mask
    for block in model.blocks:
        identity = x
        out = F.relu(bn(block.norm1, subm(block.conv1, x)))
        out = bn(block.norm2, subm(block.conv2, out))
        x = F.relu(out + identity)
    return feats + lin(model.out_proj, x) * mask


def test_matches_masked_dense_convolution():
    feats, occupied = _case()
    model = _randomize(SparseVoxelRefiner(in_channels=6, mid_channels=5, num_blocks=2))
    with torch.no_grad():
        out = model(feats, occupied)
        expected = _masked_dense_reference(model, feats, occupied)
    assert out.shape == feats.shape
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    # free voxels keep their features exactly, occupied ones change
    free = ~occupied[:, None].expand_as(feats)
    assert torch.equal(out[free], feats[free])
    assert not torch.allclose(out[~free], feats[~free])


def test_starts_as_identity_and_trains():
    feats, occupied = _case(seed=3)
    model = SparseVoxelRefiner(in_channels=6, mid_channels=4, num_blocks=1).train()
    feats.requires_grad_(True)
    out = model(feats, occupied)
    torch.testing.assert_close(out, feats)  # zero-initialised output projection
    out.square().sum().backward()
    assert model.out_proj.weight.grad is not None and model.out_proj.weight.grad.abs().sum() > 0
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


def test_one_rulebook_shared_by_all_convs(monkeypatch):
    feats, occupied = _case(seed=4)
    model = _randomize(SparseVoxelRefiner(in_channels=6, mid_channels=4, num_blocks=3))
    convs = [m for m in model.modules() if isinstance(m, spconv.SubMConv3d)]
    assert len(convs) == 6 and {c.indice_key for c in convs} == {model.indice_key}
    seen = []
    orig = spconv.SparseConvTensor.find_indice_pair

    def spy(self, key):
        found = orig(self, key)
        seen.append(found is not None)
        return found

    monkeypatch.setattr(spconv.SparseConvTensor, 'find_indice_pair', spy)
    with torch.no_grad():
        model(feats, occupied)
    # the first conv builds the rulebook, the other five find it
    assert seen.count(True) >= 5
    assert all(c.algo == spconv.ConvAlgo.Native for c in convs)


def test_empty_occupancy_and_registry_and_dense_variant():
    feats, _ = _case()
    model = MODELS.build(dict(type='SparseVoxelRefiner', in_channels=6, mid_channels=4))
    assert isinstance(model, SparseVoxelRefiner)
    none = torch.zeros(2, 9, 8, 4, dtype=torch.bool)
    assert model(feats, none) is feats
    dense = MODELS.build(dict(type='DenseVoxelRefiner', in_channels=6, mid_channels=4))
    assert isinstance(dense, DenseVoxelRefiner)
    torch.testing.assert_close(dense(feats, none), feats)
    _randomize(dense)
    assert dense(feats).shape == feats.shape


def test_occupied_from_semantics_and_bad_inputs():
    logits = torch.zeros(1, 16, 2, 2, 1)
    logits[0, 15] = 1.0
    logits[0, 3, 0, 0, 0] = 5.0
    occ = occupied_from_semantics(logits)
    assert occ.dtype == torch.bool and occ.sum() == 1 and occ[0, 0, 0, 0]
    model = SparseVoxelRefiner(in_channels=6, mid_channels=4)
    feats, occupied = _case()
    with pytest.raises(ValueError, match='occupied must be a bool'):
        model(feats, occupied.float())
    with pytest.raises(ValueError, match='feats must be'):
        model(feats[:, :5], occupied)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 2e-3), (torch.float16, 3e-2)])
def test_cuda_implicit_gemm_matches_masked_dense(dtype, tol):
    feats, occupied = _case(B=2, C=16, shape=(40, 32, 8), p=0.15)
    model = _randomize(SparseVoxelRefiner(in_channels=16, mid_channels=16, num_blocks=2))
    with torch.no_grad():
        expected = _masked_dense_reference(model, feats, occupied)
        model = model.cuda().to(dtype)
        out = model(feats.cuda().to(dtype), occupied.cuda()).float().cpu()
    assert out.shape == feats.shape
    err = (out - expected).abs().max() / expected.abs().max()
    assert err < tol, f'relative error {err:.2e}'
