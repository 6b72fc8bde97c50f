"""MaskCenterPrior: the Gaussian log-prior around each thing query's centre, alone and in
TrackOccHead (off by default)."""
import pytest
import torch

from trackocc.models.layers import MaskCenterPrior
from trackocc.registry import MODELS

E = 32
OCC = (8, 8, 4)
PC_RANGE = [-8.0, -8.0, -1.0, 8.0, 8.0, 5.4]


def build_head(**extra):
    head = MODELS.build(dict(
        type='TrackOccHead', num_classes=16, thing_classes=[1, 2, 4], embed_dims=E,
        num_stuff_queries=5, occ_size=OCC, pc_range=PC_RANGE,
        decoder=dict(type='MaskDecoder', num_layers=2, num_heads=4, num_points=2),
        sem_hidden_channels=16, **extra))
    head.init_weights()
    return head


def dense_prior(centers, sigma, max_penalty=None, occ=OCC, pc_range=PC_RANGE):
    """Reference: the (bounded) Gaussian log-density of every voxel centre, written over
    the full grid."""
    lo, hi = torch.tensor(pc_range[:3]), torch.tensor(pc_range[3:])
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in occ], indexing='ij'), -1)
    xyz = lo + (idx.double() + 0.5) * (hi - lo) / torch.tensor(occ)  # (X, Y, Z, 3)
    d = (xyz[None, None] - centers[:, :, None, None, None].double()) / \
        sigma[:, :, None, None, None].double()
    quad = 0.5 * (d * d).sum(-1)
    if max_penalty is None:
        return -quad
    return -max_penalty * (1 - torch.exp(-quad / max_penalty))


@pytest.mark.parametrize('max_penalty', [None, 8.0, 2.0])
def test_prior_matches_the_dense_gaussian_and_starts_at_init_sigma(max_penalty):
    prior = MaskCenterPrior(E, OCC, PC_RANGE, init_sigma=(2.0, 1.5, 0.8), min_sigma=0.1,
                            max_penalty=max_penalty)
    torch.manual_seed(0)
    query = torch.randn(2, 5, E)
    centers = torch.rand(2, 5, 3) * 16 - 8
    sigma = prior.sigma(query)
    assert torch.allclose(sigma, torch.tensor([2.0, 1.5, 0.8]).expand(2, 5, 3), atol=1e-5)
    out = prior(query, centers)
    assert out.shape == (2, 5, *OCC) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), dense_prior(centers, sigma, max_penalty),
                               rtol=1e-5, atol=1e-4)
    if max_penalty is not None:  # bounded: levels off at -max_penalty far from the centre
        assert out.min() >= -max_penalty and out.min() < -0.5 * max_penalty
    else:
        assert out.min() < -20
    # the voxel holding the centre has the largest value of its mask
    b, q = 1, 3
    flat = out[b, q].flatten().argmax()
    voxel = torch.tensor(torch.unravel_index(flat, OCC))
    size = (torch.tensor(PC_RANGE[3:]) - torch.tensor(PC_RANGE[:3])) / torch.tensor(OCC)
    expect = ((centers[b, q] - torch.tensor(PC_RANGE[:3])) / size).floor().long()
    assert torch.equal(voxel, expect)


def test_prior_gradients_reach_centres_and_spread():
    prior = MaskCenterPrior(E, OCC, PC_RANGE)
    query = torch.randn(1, 4, E, requires_grad=True)
    centers = (torch.rand(1, 4, 3) * 4 - 2).requires_grad_()
    # pull every mask towards voxel (0, 0, 0): the centres move towards it
    target = torch.zeros(1, 4, *OCC)
    target[:, :, 0, 0, 0] = 1
    logits = prior(query, centers)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    assert (centers.grad[..., :2] > 0).all()  # voxel 0 lies at the low x / y end
    assert prior.sigma_branch.bias.grad.abs().sum() > 0
    assert prior.sigma_branch.weight.grad.abs().sum() > 0  # (the query's grad: 0 at init)


def test_prior_rejects_bad_settings():
    with pytest.raises(ValueError, match='init_sigma'):
        MaskCenterPrior(E, OCC, PC_RANGE, init_sigma=(1.0, 1.0), min_sigma=0.2)
    with pytest.raises(ValueError, match='init_sigma'):
        MaskCenterPrior(E, OCC, PC_RANGE, init_sigma=(1.0, 1.0, 0.1), min_sigma=0.2)
    with pytest.raises(ValueError, match='max_penalty'):
        MaskCenterPrior(E, OCC, PC_RANGE, max_penalty=0.0)
    with pytest.raises(ValueError, match='occ_size'):
        MaskCenterPrior(E, OCC[:2], PC_RANGE)


def test_head_adds_the_prior_to_thing_masks_only():
    torch.manual_seed(0)
    plain = build_head()
    head = build_head(mask_center_prior=dict(init_sigma=(2.0, 2.0, 1.0)))
    assert plain.mask_center_prior is None
    # same weights in both heads except the prior's own branch
    missing = head.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing.missing_keys) == ['mask_center_prior.sigma_branch.bias',
                                            'mask_center_prior.sigma_branch.weight']
    assert not missing.unexpected_keys
    assert (head.mask_center_prior.sigma_branch.weight == 0).all()  # not xavier'd
    torch.manual_seed(1)
    query, ref = torch.randn(2, 6, 2 * E), torch.rand(2, 6, 3)
    compact, mask_feats = torch.randn(2, E, 4, 4, 4), torch.randn(2, E, *OCC)
    plain.eval(), head.eval()  # no dropout
    with torch.no_grad():
        a = plain(query, ref, compact, mask_feats)
        b = head(query, ref, compact, mask_feats)
        for lid in range(2):
            torch.testing.assert_close(b['stuff_masks'][lid], a['stuff_masks'][lid])
            torch.testing.assert_close(b['thing_centers'][lid], a['thing_centers'][lid])
            # the spread branch's weights are zero: its input does not matter
            prior = head.mask_center_prior(torch.zeros(2, 6, E),
                                           b['thing_centers'][lid][..., :3])
            torch.testing.assert_close(b['thing_masks'][lid], a['thing_masks'][lid] + prior)
            assert not torch.allclose(b['thing_masks'][lid], a['thing_masks'][lid])


def test_fixed_spread_has_no_parameters_and_moves_with_the_centre_only():
    prior = MaskCenterPrior(E, OCC, PC_RANGE, init_sigma=(3.0, 2.5, 1.5), learn_sigma=False)
    assert prior.sigma_branch is None and not list(prior.parameters())
    assert not prior.state_dict()  # a learnt-spread checkpoint's branch is its only extra
    torch.manual_seed(0)
    query = torch.randn(2, 3, E) * 10  # any decoder output: the same spread
    assert torch.equal(prior.sigma(query), torch.tensor([3.0, 2.5, 1.5]).expand(2, 3, 3))
    centers = (torch.rand(2, 3, 3) * 4 - 2).requires_grad_()
    out = prior(query, centers)
    torch.testing.assert_close(out.double(), dense_prior(centers, prior.sigma(query), 8.0),
                               rtol=1e-5, atol=1e-4)
    # an object in the low x / y corner (voxels 0-1 in x and y, all z): fitting the prior
    # alone to it walks every centre towards the object's (-6, -6)
    target = torch.zeros(2, 3, *OCC)
    target[:, :, :2, :2] = 1
    start = (centers.detach()[..., :2] + 6).norm(dim=-1)
    opt = torch.optim.SGD([centers], lr=20.0)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(
            prior(query, centers), target).backward()
        opt.step()
    assert ((centers.detach()[..., :2] + 6).norm(dim=-1) < start - 1).all()


def test_head_with_fixed_spread_loads_the_plain_heads_weights_strictly():
    torch.manual_seed(0)
    plain = build_head()
    head = build_head(mask_center_prior=dict(init_sigma=(2.0, 2.0, 1.0), learn_sigma=False))
    head.load_state_dict(plain.state_dict(), strict=True)
    query, ref = torch.randn(1, 6, 2 * E), torch.rand(1, 6, 3)
    compact, mask_feats = torch.randn(1, E, 4, 4, 4), torch.randn(1, E, *OCC)
    plain.eval(), head.eval()
    with torch.no_grad():
        a, b = plain(query, ref, compact, mask_feats), head(query, ref, compact, mask_feats)
    prior = head.mask_center_prior(query[..., :E], b['thing_centers'][-1][..., :3])
    torch.testing.assert_close(b['thing_masks'][-1], a['thing_masks'][-1] + prior)
