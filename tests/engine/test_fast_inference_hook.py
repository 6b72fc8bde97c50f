"""FastInferenceHook: the test loop runs a fused copy of the model; the runner's own model
(which EMAHook swaps parameters with) stays untouched and comes back after testing."""
import os.path as osp
import types

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from trackocc.registry import HOOKS

from repo_files import load_module


def _detector_helpers():
    """The tiny detector and its frames of tests/models/test_detector.py."""
    path = osp.join(osp.dirname(__file__), '..', 'models', 'test_detector.py')
    return load_module(path, '_tiny_detector_helpers')


_helpers = _detector_helpers()
build, images, make_clip, make_frame = (_helpers.build, _helpers.images, _helpers.make_clip,
                                        _helpers.make_frame)


def _stream(model, frames=3):
    model.reset_tracks()
    preds = []
    with torch.no_grad():
        for t in range(frames):
            sample = make_clip([make_frame(t, start=t == 0)])
            model.predict(dict(imgs=images(1, 1, seed=t)), [sample])
            occ = sample.video_data_samples[0].pred_occ
            preds.append((occ.semantics.clone(), occ.instances.clone()))
    return preds


def _num_bn(model):
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def test_fast_inference_hook_tests_a_fused_copy_and_restores_the_model():
    model = build().eval()
    want = _stream(model)  # leaves a streaming state behind, as a validation run would
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runner = types.SimpleNamespace(model=model)
    hook = HOOKS.build(dict(type='FastInferenceHook'))
    hook.before_test(runner)
    fast = runner.model
    assert fast is not model and _num_bn(fast) < _num_bn(model)
    got = _stream(fast)  # on CPU: fused batch norms, no CUDA graphs
    for (sem, inst), (sem_ref, inst_ref) in zip(got, want):
        assert (sem != sem_ref).float().mean() < 0.01
        assert (inst != inst_ref).float().mean() < 0.01
    hook.after_test(runner)
    assert runner.model is model
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
