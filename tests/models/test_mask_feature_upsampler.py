"""MaskFeatureUpsampler under autocast: its concatenations are built in the autocast dtype
(no float32 copy that the next convolution casts straight back), with the same outputs and
gradients, bit for bit, as concatenating first; outside autocast nothing changes."""
import pytest
import torch
import torch.nn.functional as F

from trackocc.analysis.memory_traffic import record_traffic
from trackocc.models.layers.mask_feature_upsampler import MaskFeatureUpsampler

C, X, Y, Z = 4, 3, 4, 2


def inputs(dtype_compact=torch.float32):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    compact = rand(1, C, X, Y, Z).to(dtype_compact)
    # float32: the volume encoder's outputs leave their autocast region as float32
    ms = [rand(1, C, 4 * X, 4 * Y, Z), rand(1, 2 * C, 2 * X, 2 * Y, Z), rand(1, 4 * C, X, Y, Z)]
    return [compact] + ms


def concatenate_first(m, compact, full, half, quarter):
    """The former forward: concatenation in the promoted dtype, the convolution casts."""
    x = m.up0(torch.cat([compact, quarter], dim=1))
    half = F.interpolate(half, size=x.shape[-3:], mode='trilinear', align_corners=True)
    x = m.up1(torch.cat([x, half], dim=1))
    return m.final_conv(torch.cat([full, x], dim=1))


@pytest.mark.parametrize('train', [False, True])
def test_same_outputs_and_gradients_as_concatenating_first(train):
    torch.manual_seed(0)
    m = MaskFeatureUpsampler(in_channels=C, out_channels=8).train(train)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    results = []
    for forward in (lambda *a: m(a[0], a[1:]), lambda *a: concatenate_first(m, *a)):
        m.load_state_dict(state)  # the same batch-norm statistics for both
        m.zero_grad()
        ins = [t.clone().requires_grad_(train) for t in inputs(torch.bfloat16)]
        with torch.autocast('cpu', dtype=torch.bfloat16), torch.set_grad_enabled(train):
            out = forward(*ins)
        # bf16 (the CPU training path's sliced convolution adds its bias in float32)
        assert out.dtype == (torch.float32 if train else torch.bfloat16)
        grads = []
        if train:
            (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            grads = [t.grad for t in ins] + [p.grad for p in m.parameters()]
        results.append((out, grads, [b.clone() for b in m.buffers()]))
    (a, ga, ba), (b, gb, bb) = results
    assert torch.equal(a, b)
    for x, y in zip(ga + ba, gb + bb):
        assert torch.equal(x, y)


def test_no_float32_concatenation_under_autocast():
    m = MaskFeatureUpsampler(in_channels=C, out_channels=8).eval()
    ins = inputs(torch.bfloat16)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), \
            record_traffic() as new:
        m(ins[0], ins[1:])
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), \
            record_traffic() as old:
        concatenate_first(m, *ins)
    # bytes written by the concatenations: bf16 instead of float32 parts
    assert new.by_op[('copy', 'cat')][2] * 2 == old.by_op[('copy', 'cat')][2]
    assert new.summary()['total']['moved_mib'] < old.summary()['total']['moved_mib']


def test_unchanged_without_autocast():
    m = MaskFeatureUpsampler(in_channels=C, out_channels=8).eval()
    ins = inputs()
    with torch.no_grad():
        assert torch.equal(m(ins[0], ins[1:]), concatenate_first(m, *ins))
