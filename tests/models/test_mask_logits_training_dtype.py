"""Under AMP the head's voxel mask logits stay in the autocast dtype in training
(``MASK_LOGIT_OUTPUTS``): the matching and the losses gather their rows and visible voxels
first and widen those to float32. Losses and gradients must be those of widening the whole
(Q, X*Y*Z) tensors first, as the reference's ``force_fp32`` did (issue 16 item 3: that copy
was ~4 GiB of memory traffic a paper-config clip)."""
import torch

import trackocc.models.detectors.clip_training as training_module
from test_detector import build_without_dropout, images, make_clip, make_frame, tiny_cfg


def _model(state=None):
    return build_without_dropout(tiny_cfg(), state)  # the same draws in both passes


def _bf16_step(model):
    """Losses and gradients of one 3-frame clip under bf16 autocast; the dtypes of the mask
    logits the losses receive."""
    seen = []
    loss = model.track_criterion.loss

    def spy(cls_logits, mask_logits, *args, **kwargs):
        seen.append(mask_logits.dtype)
        return loss(cls_logits, mask_logits, *args, **kwargs)

    model.track_criterion.loss = spy
    torch.manual_seed(3)
    clip = make_clip([make_frame(t) for t in range(3)])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(dict(imgs=images(1, 3)), [clip])
    sum(losses.values()).backward()
    del model.track_criterion.loss
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads, seen


def test_mask_logits_widened_after_the_gather_give_the_same_losses_and_gradients(monkeypatch):
    assert training_module.MASK_LOGIT_OUTPUTS == ('thing_masks', 'stuff_masks')
    uncast = _model()
    assert uncast.autocast_scope == 'reference'
    widened = _model(uncast.state_dict())
    losses_u, grads_u, seen_u = _bf16_step(uncast)
    monkeypatch.setattr(training_module, 'MASK_LOGIT_OUTPUTS', ())  # widen everything first
    losses_w, grads_w, seen_w = _bf16_step(widened)
    assert set(seen_u) == {torch.bfloat16} and set(seen_w) == {torch.float32}
    assert list(losses_u) == list(losses_w)
    for k, v in losses_w.items():
        assert losses_u[k].dtype == torch.float32, k
        torch.testing.assert_close(losses_u[k], v, rtol=1e-6, atol=1e-7, msg=k)
    assert sorted(grads_u) == sorted(grads_w)
    for n, g in grads_w.items():
        torch.testing.assert_close(grads_u[n], g, rtol=1e-5,
                                   atol=1e-6 * max(float(g.abs().max()), 1.0), msg=n)
