"""``anchor_track_modules``: the zero-weight anchor that lets DDP run without
``find_unused_parameters`` (issue 16 item 3). A clip without things never carries a track, so
the query interaction and the memory bank are not in its graph; with the anchor every
trainable parameter gets a gradient and the losses keep their values."""
import pytest
import torch
from torch import nn

from test_detector import build, images, make_clip, make_frame, tiny_cfg
from trackocc.models.detectors.graph_anchor import zero_weight_anchor


def test_anchor_is_zero_and_gives_every_parameter_a_zero_gradient():
    mods = [nn.Linear(3, 4), None, nn.LayerNorm(4)]
    frozen = nn.Linear(2, 2).requires_grad_(False)
    anchor = zero_weight_anchor(mods + [frozen])
    assert anchor.shape == () and anchor.item() == 0.0
    anchor.backward()
    for m in (mods[0], mods[2]):
        for p in m.parameters():
            assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any()
    assert all(p.grad is None for p in frozen.parameters())
    assert zero_weight_anchor([None, frozen]) is None


def _unused_after_step(anchor: bool, things: bool):
    cfg = tiny_cfg()
    cfg['anchor_track_modules'] = anchor
    model = build(cfg).train()
    torch.manual_seed(3)  # random drop / false positives: the same draws in both runs
    clip = make_clip([make_frame(t, things=things) for t in range(3)])
    losses = model.loss(dict(imgs=images(1, 3)), [clip])
    sum(losses.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    return losses, unused, model


@pytest.mark.parametrize('things', [False, True])
def test_anchor_keeps_losses_and_puts_every_parameter_in_the_graph(things):
    plain, unused_plain, _ = _unused_after_step(False, things)
    anchored, unused_anchored, model = _unused_after_step(True, things)
    assert list(anchored) == list(plain)
    for k in plain:  # the anchor adds exactly 0
        assert torch.equal(anchored[k].detach(), plain[k].detach()), k
    assert unused_anchored == []
    if not things:  # what the anchor is for: these had no gradient without it
        assert unused_plain and all(n.startswith(('query_interaction.', 'memory_bank.'))
                                    for n in unused_plain)
        for n, p in model.named_parameters():
            if n in unused_plain:
                assert not p.grad.any(), n  # zero, not a made-up gradient
    else:
        assert unused_plain == []
