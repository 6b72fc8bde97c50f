"""``clip_feature_batch``: in training every feature network runs once over a clip's frames,
each training batch norm normalising each frame on its own (issue 16 item 3: T times fewer
launches for the encoders), with the losses, gradients and running statistics of the
frame-by-frame pass."""
import pytest
import torch
from torch import nn

from test_detector import (build_without_dropout, images, make_clip, make_frame,
                           tiny_cfg)


def _model(feature_batch: bool, state=None, **cfg_changes):
    cfg = dict(tiny_cfg(), clip_feature_batch=feature_batch, clip_image_batch=False,
               **cfg_changes)
    return build_without_dropout(cfg, state)  # the same draws in both passes


def _step(model, batch, device='cpu'):
    """Losses and gradients of ``batch`` 3-frame clips; the volume encoder's inputs."""
    calls = []
    handle = model.volume_encoder_backbone.register_forward_hook(
        lambda _, args, out: calls.append(tuple(args[0].shape)))
    torch.manual_seed(3)  # random drop / false positives: the same draws in both runs
    clips = [make_clip([make_frame(t, seq=b) for t in range(3)]).to(device)
             for b in range(batch)]
    losses = model.loss(dict(imgs=images(batch, 3).to(device)), clips)
    sum(losses.values()).backward()
    handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads, calls


def _batch_norm_state(model):
    return {n: b.clone() for n, b in model.named_buffers()
            if n.rsplit('.', 1)[-1] in ('running_mean', 'running_var', 'num_batches_tracked')}


@pytest.mark.parametrize('batch', [1, 2])
def test_batched_features_give_the_frame_by_frame_losses_gradients_and_statistics(batch):
    _check_against_frame_by_frame(batch, 'cpu')


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('batch', [1, 2])
def test_batched_features_on_cuda(batch, monkeypatch):
    """cuDNN's batch norm over the frames as channels, and the multi-tensor updates. In
    float32 without TF32: TF32 convolutions (cuDNN's default) of a batch of 3 frames and of
    1 round differently at ~1e-3, above the tolerances (seen on an H200, 2026-12-05)."""
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    _check_against_frame_by_frame(batch, 'cuda')


def _check_against_frame_by_frame(batch, device):
    batched = _model(True).to(device)
    frames = _model(False, state=batched.state_dict()).to(device)
    assert batched.clip_features_batchable()
    # the tiny config trains every batch norm, the image backbone's too
    assert not batched.image_encoder_batch_free()
    losses_b, grads_b, calls_b = _step(batched, batch, device)
    losses_f, grads_f, calls_f = _step(frames, batch, device)
    assert len(calls_b) == 1 and calls_b[0][0] == 3 * batch
    assert len(calls_f) == 3 and all(c[0] == batch for c in calls_f)
    assert list(losses_b) == list(losses_f)
    for k in losses_f:
        torch.testing.assert_close(losses_b[k], losses_f[k], rtol=1e-4, atol=1e-5, msg=k)
    assert sorted(grads_b) == sorted(grads_f)
    for n, g in grads_f.items():
        # a floor of 1: the bias of a convolution before a batch norm has a gradient that is
        # 0 up to rounding (~1e-6 here), which rounds differently in either pass
        scale = max(float(g.abs().max()), 1.0)
        torch.testing.assert_close(grads_b[n], g, rtol=1e-3, atol=1e-4 * scale, msg=n)
    stats_b, stats_f = _batch_norm_state(batched), _batch_norm_state(frames)
    assert sorted(stats_b) == sorted(stats_f) and len(stats_f) > 20
    for n, value in stats_f.items():
        torch.testing.assert_close(stats_b[n], value, rtol=1e-4, atol=1e-5, msg=n)
    # the batch norms have their own forward again
    assert not any('forward' in m.__dict__ for m in batched.modules())


def test_a_batch_norm_that_cannot_be_grouped_runs_frame_by_frame():
    model = _model(True)
    bn = next(m for m in model.volume_encoder_backbone.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm))
    bn.momentum = None  # a cumulative average
    assert not model.clip_features_batchable()
    _, _, calls = _step(model, 1)
    assert len(calls) == 3


def test_by_default_on_an_accelerator_only():
    model = _model(None)
    assert model.clip_feature_batch is None
    _, _, calls = _step(model, 1)  # the CPU: frame by frame, which computes faster there
    assert len(calls) == 3
    with pytest.raises(ValueError, match='clip_feature_batch must be'):
        _model('yes')


def test_one_frame_and_the_switch_off_run_frame_by_frame():
    model = _model(True)
    assert model.clip_features(images(1, 1), [[make_frame(0)]], amp=None) is None
    model.clip_feature_batch = False
    assert model.clip_features(images(1, 3), [[make_frame(t) for t in range(3)]],
                               amp=None) is None
