"""``clip_image_batch``: in training the image encoder runs once over a clip's frames when none
of its layers mixes the samples of a batch (issue 16 item 3: T times fewer launches for the
largest sub-network), with the losses and gradients of the frame-by-frame pass."""
import pytest
import torch

from test_detector import build, images, make_clip, make_frame, tiny_cfg


def _model(clip_image_batch: bool, norm_eval: bool, state=None):
    cfg = tiny_cfg()
    cfg['clip_image_batch'] = clip_image_batch
    cfg['clip_feature_batch'] = False  # the image encoder alone (with a refiner, e.g.)
    cfg['img_backbone'] = dict(cfg['img_backbone'], norm_eval=norm_eval)
    model = build(cfg)
    if state is not None:
        model.load_state_dict(state)
    return model.train()


def _step(model, batch=1):
    """Losses and gradients of ``batch`` 3-frame clips; the image backbone's forward calls."""
    calls = []
    handle = model.img_backbone.register_forward_hook(
        lambda _, args, out: calls.append(tuple(args[0].shape)))
    torch.manual_seed(3)  # random drop / false positives: the same draws in both runs
    clips = [make_clip([make_frame(t, seq=b) for t in range(3)]) for b in range(batch)]
    losses = model.loss(dict(imgs=images(batch, 3)), clips)
    sum(losses.values()).backward()
    handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads, calls


@pytest.mark.parametrize('batch', [1, 2])
def test_batched_clip_gives_the_frame_by_frame_losses_and_gradients(batch):
    torch.manual_seed(0)
    batched = _model(True, norm_eval=True)
    frames = _model(False, norm_eval=True, state=batched.state_dict())
    assert batched.image_encoder_batch_free()
    losses_b, grads_b, calls_b = _step(batched, batch)
    losses_f, grads_f, calls_f = _step(frames, batch)
    n_cams = images(1, 3).shape[2]
    # once, every frame's cameras of every clip; frame by frame: the clips' cameras
    assert len(calls_b) == 1 and calls_b[0][0] == 3 * batch * n_cams
    assert len(calls_f) == 3 and all(c[0] == batch * n_cams for c in calls_f)
    assert list(losses_b) == list(losses_f)
    for k in losses_f:
        torch.testing.assert_close(losses_b[k], losses_f[k], rtol=1e-4, atol=1e-5, msg=k)
    assert sorted(grads_b) == sorted(grads_f)
    assert any(n.startswith('img_backbone.') for n in grads_f)  # the encoder does learn
    for n, g in grads_f.items():
        scale = float(g.abs().max()) or 1.0
        torch.testing.assert_close(grads_b[n], g, rtol=1e-3, atol=1e-4 * scale, msg=n)


def test_batch_norms_in_training_mode_keep_the_frames_apart():
    # the tiny config's backbone trains its batch norms: their statistics would span the
    # frames, so the encoder runs frame by frame as the reference does
    model = _model(True, norm_eval=False)
    assert not model.image_encoder_batch_free()
    _, _, calls = _step(model)
    assert len(calls) == 3
    model.eval()
    assert model.image_encoder_batch_free()


def test_one_frame_clip_runs_as_before():
    model = _model(True, norm_eval=True)
    assert model.clip_image_features(images(1, 1), amp=None) is None
