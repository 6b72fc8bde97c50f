"""FastInferenceHook(channels_last=True) / tools/test.py --fast --channels-last: the tested copy
runs its convolution stacks channels-last (with held autocast weights too), predicts the default
layout's stream up to float rounding, and is given back in the default layout."""
import os.path as osp
import types

import pytest
import torch

from trackocc.registry import HOOKS

from repo_files import load_module

_helpers = load_module(osp.join(osp.dirname(__file__), '..', 'models', 'test_detector.py'),
                       '_tiny_detector_helpers_fast_cl')
# mmengine TestLoop's test_step calls over tiny frames: per frame (semantics, instances)
_test_loop = load_module(osp.join(osp.dirname(__file__), 'test_fast_inference_hook.py'),
                         '_fast_inference_hook_tests_fast_cl')._test_loop


def _hooks(model):
    return [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]


def _backbone_convs(model):
    return [m for m in model.img_backbone.modules() if isinstance(m, torch.nn.Conv2d)]


def test_float32_copy_runs_channels_last_and_predicts_the_same_stream():
    model = _helpers.build().eval()
    runner = types.SimpleNamespace(model=model)
    plain = HOOKS.build(dict(type='FastInferenceHook'))
    plain.before_test(runner)
    want = _test_loop(runner)
    plain.after_test(runner)

    hook = HOOKS.build(dict(type='FastInferenceHook', channels_last=True))
    hook.before_test(runner)
    fast = runner.model
    hooks = _hooks(model)
    layouts = []
    got = _test_loop(runner, after_frame=lambda t: layouts.append(all(
        m.weight.is_contiguous(memory_format=torch.channels_last)
        for m in _backbone_convs(fast))))
    assert layouts == [True] * 3
    assert _hooks(model) == hooks  # runner's model untouched
    hook.after_test(runner)
    assert runner.model is model
    assert all(p.is_contiguous() for p in fast.parameters())  # layout restored after the test
    assert not any(m._forward_pre_hooks for m in fast.modules())
    for (sem, inst), (sem_ref, inst_ref) in zip(got, want):  # float32: rounding only
        assert (sem != sem_ref).float().mean() < 0.01
        assert (inst != inst_ref).float().mean() < 0.01


def test_held_autocast_weights_keep_the_layout_and_both_are_restored(monkeypatch):
    import sys
    logs = []
    module = sys.modules[HOOKS.get('FastInferenceHook').__module__]
    monkeypatch.setattr(module, 'print_log', lambda msg, **kwargs: logs.append(msg))
    bf16 = torch.bfloat16
    model = _helpers.build().eval()
    runner = types.SimpleNamespace(model=model)
    hook = HOOKS.build(dict(type='FastInferenceHook', query_budget=40, autocast_weights=True,
                            channels_last=True))
    hook.before_test(runner)
    fast = runner.model
    assert 'convolutions channels-last in img_backbone, img_neck' in logs[0]
    seen = []

    def check(t):
        convs = _backbone_convs(fast)
        assert all(m.weight.dtype == bf16 for m in convs)
        assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
        seen.append(t)

    _test_loop(runner, autocast_dtype=bf16, after_frame=check)
    assert seen == [0, 1, 2]
    hook.after_test(runner)
    assert runner.model is model
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in fast.parameters())


def test_a_model_without_the_stacks_is_refused():
    runner = types.SimpleNamespace(model=torch.nn.Linear(2, 2))
    hook = HOOKS.build(dict(type='FastInferenceHook', channels_last=True,
                            cuda_graph_modules=[]))
    with pytest.raises(ValueError, match='none of'):
        hook.before_test(runner)
    assert isinstance(runner.model, torch.nn.Linear)


TINY_CFG = 'configs/trackocc/trackocc_tiny_synthetic.py'


def _fast_hooks(*options):
    tool = load_module('tools/test.py', '_test_tool_cl')
    cfg = tool.build_config(tool.parse_args([TINY_CFG, '--random-init'] + list(options)))
    return [h for h in cfg.get('custom_hooks', None) or [] if h['type'] == 'FastInferenceHook']


def test_test_tool_passes_channels_last_only_with_fast(capsys):
    assert _fast_hooks('--fast') == [dict(type='FastInferenceHook')]
    assert _fast_hooks('--fast', '--channels-last') == [
        dict(type='FastInferenceHook', channels_last=True)]
    (hook, ) = _fast_hooks('--fast', '--amp', '--autocast-weights', '--channels-last')
    assert hook == dict(type='FastInferenceHook', autocast_weights=True, channels_last=True)
    HOOKS.build(hook)
    with pytest.raises(SystemExit) as exc:
        _fast_hooks('--channels-last')
    assert exc.value.code == 2 and '--channels-last needs --fast' in capsys.readouterr().err
