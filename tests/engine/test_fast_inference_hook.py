"""FastInferenceHook: the test loop runs a fused copy of the model; the runner's own model
(which EMAHook swaps parameters with) stays untouched and comes back after testing."""
import os.path as osp
import types

import pytest
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


# -- query budget, head graph, autocast weights -------------------------------------------------
def _hook_logs(monkeypatch):
    """Messages the hook logs, in order."""
    import sys
    logs = []
    module = sys.modules[HOOKS.get('FastInferenceHook').__module__]
    monkeypatch.setattr(module, 'print_log', lambda msg, **kwargs: logs.append(msg))
    return logs


def _fast_copy(monkeypatch, **options):
    """A tiny model, a runner holding it and the hook built with ``options``, after
    ``before_test``: ``(model, runner, hook, logs)``, ``runner.model`` the fast copy."""
    model = build().eval()
    runner = types.SimpleNamespace(model=model)
    logs = _hook_logs(monkeypatch)
    hook = HOOKS.build(dict(type='FastInferenceHook', **options))
    hook.before_test(runner)
    return model, runner, hook, logs


def _test_loop(runner, frames=3, autocast_dtype=None, after_frame=None):
    """The ``test_step`` calls of mmengine's TestLoop over ``frames`` tiny frames (under CPU
    autocast to ``autocast_dtype``, else float32), ``after_frame(t)`` after each; per frame
    the predicted (semantics, instances)."""
    runner.model.eval()
    preds = []
    for t in range(frames):
        clip = make_clip([make_frame(t, start=t == 0)])
        data = dict(inputs=dict(imgs=images(1, 1, seed=t)), data_samples=[clip])
        with torch.no_grad(), torch.autocast('cpu', dtype=autocast_dtype or torch.bfloat16,
                                             enabled=autocast_dtype is not None):
            out = runner.model.test_step(data)
        occ = out[0].video_data_samples[0].pred_occ
        preds.append((occ.semantics.clone(), occ.instances.clone()))
        if after_frame is not None:
            after_frame(t)
    return preds


def test_query_budget_is_set_on_the_copy_and_the_head_is_not_graphed_on_cpu(monkeypatch):
    from trackocc.utils.cuda_graph import CUDAGraphModule
    model = build().eval()
    want = _stream(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runner = types.SimpleNamespace(model=model)
    logs = _hook_logs(monkeypatch)
    hook = HOOKS.build(dict(type='FastInferenceHook', query_budget=40))
    hook.before_test(runner)
    fast = runner.model
    assert fast is not model and fast.query_budget == 40 and model.query_budget is None
    # CUDA graphs are CUDA only: nothing is wrapped on CPU, and the log says so
    assert not any(isinstance(m, CUDAGraphModule) for m in fast.modules())
    assert 'query budget 40' in logs[0] and 'no CUDA graphs on cpu' in logs[0]
    assert 'pts_bbox_head, panoptic_merge run eagerly' in logs[0]
    rows = []
    fast.pts_bbox_head.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[1]))
    got = _stream(fast)
    assert rows == [40] * 3  # the head ran on the padded budget every frame
    for (sem, inst), (sem_ref, inst_ref) in zip(got, want):
        assert (sem != sem_ref).float().mean() < 0.01
        assert (inst != inst_ref).float().mean() < 0.01
    hook.after_test(runner)
    assert runner.model is model and model.query_budget is None
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_fixed_track_rows_on_the_copy_only(monkeypatch):
    model = build().eval()
    want = _stream(model)
    runner = types.SimpleNamespace(model=model)
    logs = _hook_logs(monkeypatch)
    hook = HOOKS.build(dict(type='FastInferenceHook', query_budget=40, fixed_track_rows=True))
    hook.before_test(runner)
    fast = runner.model
    assert fast.fixed_track_rows and not model.fixed_track_rows
    assert "tracks kept at the budget's rows" in logs[0]
    rows = []
    fast.register_merge_observer(lambda tracks, out: rows.append(len(tracks)))
    got = _stream(fast)
    assert rows == [40] * 3  # the tracks themselves kept the budget's rows
    for (sem, inst), (sem_ref, inst_ref) in zip(got, want):
        assert (sem != sem_ref).float().mean() < 0.01
        assert (inst != inst_ref).float().mean() < 0.01
    hook.after_test(runner)
    assert runner.model is model and not model.fixed_track_rows


def test_compiled_sub_modules_and_tf32_matmuls_on_the_copy_only(monkeypatch):
    model = build().eval()
    want = _stream(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    precision = torch.get_float32_matmul_precision()
    runner = types.SimpleNamespace(model=model)
    logs = _hook_logs(monkeypatch)
    hook = HOOKS.build(dict(type='FastInferenceHook', compile_modules=['occ_encoder.upsampler'],
                            tf32_matmul=True))
    hook.before_test(runner)
    fast = runner.model
    assert hasattr(fast.occ_encoder.upsampler, '_orig_mod')  # compiled on the copy
    assert not hasattr(model.occ_encoder.upsampler, '_orig_mod')  # not on the runner's model
    assert 'compiled occ_encoder.upsampler' in logs[0] and 'TF32' in logs[0]
    assert torch.get_float32_matmul_precision() == 'high'
    got = _stream(fast)  # Inductor's CPU kernels, folded batch norms
    for (sem, inst), (sem_ref, inst_ref) in zip(got, want):
        assert (sem != sem_ref).float().mean() < 0.01
        assert (inst != inst_ref).float().mean() < 0.01
    hook.after_test(runner)
    assert runner.model is model and torch.get_float32_matmul_precision() == precision
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize('fixed_rows', [False, True])
def test_tracking_compiles_with_dynamic_shapes_unless_rows_are_fixed(fixed_rows, monkeypatch):
    real_compile, calls = torch.compile, {}

    def compile_(module, **kwargs):
        calls[type(module).__name__] = kwargs.get("dynamic")
        return real_compile(module, backend='eager', **kwargs)

    monkeypatch.setattr(torch, 'compile', compile_)
    model, runner, hook, logs = _fast_copy(
        monkeypatch, query_budget=40, fixed_track_rows=fixed_rows,
        compile_modules=['query_interaction', 'occ_encoder.upsampler'])
    upsampler = type(model.occ_encoder.upsampler).__name__
    assert calls == {type(model.query_interaction).__name__: None if fixed_rows else True,
                     upsampler: None}
    assert ('query_interaction (dynamic shapes)' in logs[0]) != fixed_rows
    hook.after_test(runner)


def test_graph_lists_and_the_models_own_budget(monkeypatch):
    from trackocc.utils.cuda_graph import DETECTOR_GRAPH_MODULES
    hook = HOOKS.build(dict(type='FastInferenceHook'))
    assert hook.graph_names(None) == DETECTOR_GRAPH_MODULES
    assert hook.graph_names(40) == DETECTOR_GRAPH_MODULES + ('pts_bbox_head', 'panoptic_merge')
    # a given list is used as it is: this one leaves the head out
    hook = HOOKS.build(dict(type='FastInferenceHook', query_budget=40,
                            cuda_graph_modules=list(DETECTOR_GRAPH_MODULES)))
    assert hook.graph_names(40) == DETECTOR_GRAPH_MODULES
    # model.query_budget from the config: the copy keeps it, the head joins the graphs
    model = build().eval()
    model.query_budget = 40
    runner = types.SimpleNamespace(model=model)
    logs = _hook_logs(monkeypatch)
    hook = HOOKS.build(dict(type='FastInferenceHook', cuda_graph_modules=['pts_bbox_head']))
    hook.before_test(runner)
    assert runner.model.query_budget == 40
    assert "query budget 40 thing query rows (the model's)" in logs[0]
    assert 'no CUDA graphs on cpu (CUDA only; pts_bbox_head run eagerly)' in logs[0]
    hook.after_test(runner)
    assert runner.model is model


def test_stable_outputs_default_to_the_rig_dependent_graphs():
    """Unless given, the graphed modules that capture again at each new camera rig return
    stable outputs; a given list (empty too) is used as it is."""
    from trackocc.utils.cuda_graph import DETECTOR_GRAPH_MODULES
    default = HOOKS.build(dict(type='FastInferenceHook'))
    assert default.stable_output_names(DETECTOR_GRAPH_MODULES) == ('img_view_transformer',
                                                                   'occ_encoder')
    assert default.stable_output_names(['img_backbone', 'occ_encoder']) == ('occ_encoder', )
    assert default.stable_output_names([]) == ()
    off = HOOKS.build(dict(type='FastInferenceHook', stable_outputs=[]))
    assert off.stable_output_names(DETECTOR_GRAPH_MODULES) == ()
    given = HOOKS.build(dict(type='FastInferenceHook', stable_outputs=['img_neck']))
    assert given.stable_output_names(DETECTOR_GRAPH_MODULES) == ('img_neck', )


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(query_budget=0), ValueError, 'query_budget must be None or an int >= 1'),
    (dict(query_budget=True), ValueError, 'query_budget must be'),
    (dict(query_budget=40.0), ValueError, 'query_budget must be'),
    (dict(cuda_graph_modules='img_backbone'), TypeError, 'list of attribute names'),
    (dict(compile_modules='occ_encoder'), TypeError, 'list of sub-module paths'),
    (dict(stable_outputs='occ_encoder'), TypeError, 'stable_outputs must be a list'),
    (dict(cuda_graph_modules=['memory_bank']), ValueError, 'need fixed_track_rows'),
    (dict(cuda_graph_modules=['track_carry']), ValueError, 'need fixed_track_rows'),
    (dict(cuda_graph_modules=['track_carry', 'memory_bank'], fixed_track_rows=True),
     ValueError, r"'track_carry' calls \['memory_bank'\]"),
    (dict(graph_rekey_warmup=-1), ValueError, 'graph_rekey_warmup must be None or an int'),
    (dict(graph_rekey_warmup=True), ValueError, 'graph_rekey_warmup must be None or an int'),
])
def test_bad_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        HOOKS.build(dict(type='FastInferenceHook', **kwargs))


@pytest.mark.parametrize('kwargs, target, match', [
    (dict(query_budget=3), 'tiny', r'query_budget: .*num_thing_queries \(6\), got 3'),
    (dict(cuda_graph_modules=['img_backbon']), 'tiny', r"\['img_backbon'\] are not attributes"),
    (dict(compile_modules=['occ_encoder.upsampler', 'occ_encoder.nope']), 'tiny',
     r"FastInferenceHook: compile_modules: TrackOcc has no sub-module 'occ_encoder.nope'"),
    (dict(cuda_graph_modules=['img_backbone', 'pts_bbox_head']), 'tiny',
     "'pts_bbox_head' in cuda_graph_modules needs a query_budget"),
    (dict(cuda_graph_modules=['img_backbone', 'panoptic_merge']), 'tiny',
     "'panoptic_merge' in cuda_graph_modules needs a query_budget"),
    (dict(query_budget=40, cuda_graph_modules=[]), 'linear', 'needs a detector with a '
     'query_budget'),
    (dict(fixed_track_rows=True), 'tiny', 'fixed_track_rows needs a query_budget'),
    (dict(fixed_rig_inputs=True, cuda_graph_modules=[]), 'linear',
     'fixed_rig_inputs needs a detector'),
    (dict(stable_outputs=['pts_bbox_head']), 'tiny',  # graphed only with a budget
     r"stable_outputs \['pts_bbox_head'\] are not among the graphed modules"),
])
def test_a_model_that_cannot_take_the_options_keeps_the_runner_untouched(kwargs, target, match):
    model = build().eval() if target == 'tiny' else torch.nn.Linear(2, 2)
    runner = types.SimpleNamespace(model=model)
    hook = HOOKS.build(dict(type='FastInferenceHook', **kwargs))
    with pytest.raises(ValueError, match=match):
        hook.before_test(runner)
    assert runner.model is model
    assert getattr(model, 'query_budget', None) is None


def test_autocast_weights_are_held_after_the_first_frame_and_restored(monkeypatch):
    bf16 = torch.bfloat16
    model = build().eval()
    runner = types.SimpleNamespace(model=model)
    plain = HOOKS.build(dict(type='FastInferenceHook', query_budget=40))
    plain.before_test(runner)
    want = _test_loop(runner, autocast_dtype=bf16)  # autocast's per-call weight casts
    plain.after_test(runner)

    logs = _hook_logs(monkeypatch)
    hook = HOOKS.build(dict(type='FastInferenceHook', query_budget=40, autocast_weights=True))
    hook.before_test(runner)
    fast = runner.model
    assert 'test_step' in fast.__dict__  # the probe waits for the first test frame
    held = []

    def check(t):
        assert 'test_step' not in fast.__dict__  # later frames run the model's own step
        convs = [m for m in fast.img_backbone.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(m.weight.dtype == bf16 for m in convs)
        # the depth net runs with autocast off: it keeps float32
        assert fast.img_view_transformer.depth_net.reduce_conv[0].weight.dtype == \
            torch.float32
        assert all(p.dtype == torch.float32 for p in model.parameters())  # runner's model
        held.append(t)

    got = _test_loop(runner, autocast_dtype=bf16, after_frame=check)
    assert held == [0, 1, 2]
    assert sum('layers held in torch.bfloat16' in m for m in logs) == 1
    hook.after_test(runner)
    assert runner.model is model
    assert all(p.dtype == torch.float32 for p in fast.parameters())  # restored after the test
    for (sem, inst), (sem_ref, inst_ref) in zip(got, want):  # same stream bit for bit
        assert torch.equal(sem, sem_ref) and torch.equal(inst, inst_ref)


def test_autocast_weights_do_not_apply_to_a_float32_test_loop(monkeypatch):
    model, runner, hook, logs = _fast_copy(monkeypatch, autocast_weights=True)
    fast = runner.model
    _test_loop(runner, frames=2)
    assert all(p.dtype == torch.float32 for p in fast.parameters())
    assert any('autocast weights do not apply' in m and 'without autocast' in m for m in logs)
    hook.after_test(runner)
    assert runner.model is model


# -- tools/test.py --fast options ---------------------------------------------------------------
TINY_CFG = 'configs/trackocc/trackocc_tiny_synthetic.py'  # 20 fresh queries, float32 test loop


def _fast_hooks(*options):
    tool = load_module('tools/test.py', '_test_tool')
    cfg = tool.build_config(tool.parse_args([TINY_CFG, '--random-init'] + list(options)))
    return [h for h in cfg.get('custom_hooks', None) or [] if h['type'] == 'FastInferenceHook']


def test_test_tool_passes_the_fast_options_to_the_hook():
    assert _fast_hooks() == []
    assert _fast_hooks('--fast') == [dict(type='FastInferenceHook')]
    assert _fast_hooks('--fast', '--query-budget', '84') == [
        dict(type='FastInferenceHook', query_budget=84)]
    assert _fast_hooks('--fast', '--amp', '--autocast-weights') == [
        dict(type='FastInferenceHook', autocast_weights=True)]
    assert _fast_hooks('--fast', '--compile-modules', 'img_neck', 'occ_encoder.upsampler',
                       '--tf32-matmul') == [
        dict(type='FastInferenceHook', compile_modules=['img_neck', 'occ_encoder.upsampler'],
             tf32_matmul=True)]
    assert _fast_hooks('--fast', '--query-budget', '84', '--fixed-track-rows') == [
        dict(type='FastInferenceHook', query_budget=84, fixed_track_rows=True)]
    assert _fast_hooks('--fast', '--graph-stable-outputs', 'img_view_transformer',
                       'occ_encoder') == [
        dict(type='FastInferenceHook', stable_outputs=['img_view_transformer', 'occ_encoder'])]
    assert _fast_hooks('--fast', '--graph-stable-outputs', 'none') == [
        dict(type='FastInferenceHook', stable_outputs=[])]
    assert _fast_hooks('--fast', '--graph-rekey-warmup', '2') == [
        dict(type='FastInferenceHook', graph_rekey_warmup=2)]
    assert _fast_hooks('--fast', '--no-float32-queries') == [
        dict(type='FastInferenceHook', float32_queries=False)]
    assert HOOKS.build(dict(type='FastInferenceHook')).float32_queries  # the default
    assert _fast_hooks('--fast', '--no-fixed-rig-inputs') == [
        dict(type='FastInferenceHook', fixed_rig_inputs=False)]
    assert _fast_hooks('--fast', '--float32-masks') == [
        dict(type='FastInferenceHook', float32_masks=True)]
    assert not HOOKS.build(dict(type='FastInferenceHook')).float32_masks  # the default
    # the hook's default: a new camera rig captured at its first frame
    assert HOOKS.build(dict(type='FastInferenceHook')).graph_rekey_warmup == 0
    (hook, ) = _fast_hooks('--fast', '--amp', '--autocast-weights', '--query-budget', '20')
    HOOKS.build(hook)  # the hook takes what the tool gives


@pytest.mark.parametrize('options, match', [
    (['--query-budget', '84'], '--query-budget needs --fast'),
    (['--amp', '--autocast-weights'], '--autocast-weights needs --fast'),
    (['--fast', '--query-budget', '0'], '--query-budget must be >= 1'),
    (['--compile-modules', 'img_neck'], '--compile-modules needs --fast'),
    (['--tf32-matmul'], '--tf32-matmul needs --fast'),
    (['--graph-stable-outputs', 'occ_encoder'], '--graph-stable-outputs needs --fast'),
    (['--fixed-track-rows'], '--fixed-track-rows needs --fast'),
    (['--fast', '--graph-stable-outputs', 'none', 'occ_encoder'], '"none" goes alone'),
    (['--graph-rekey-warmup', '0'], '--graph-rekey-warmup needs --fast'),
    (['--fast', '--graph-rekey-warmup', '-1'], '--graph-rekey-warmup must be >= 0'),
    (['--no-float32-queries'], '--no-float32-queries needs --fast'),
    (['--no-fixed-rig-inputs'], '--no-fixed-rig-inputs needs --fast'),
    (['--float32-masks'], '--float32-masks needs --fast'),
])
def test_test_tool_refuses_options_without_fast_or_out_of_range(options, match, capsys):
    with pytest.raises(SystemExit) as exc:
        _fast_hooks(*options)
    assert exc.value.code == 2 and match in capsys.readouterr().err


@pytest.mark.parametrize('options, match', [
    (['--fast', '--query-budget', '19'], r'--query-budget 19 is less than the 20 fresh thing '
     'queries of configs/trackocc/trackocc_tiny_synthetic.py'),
    (['--fast', '--autocast-weights'], r'--autocast-weights needs a test loop under autocast: '
     r'configs/trackocc/trackocc_tiny_synthetic.py tests in float32 .* add --amp'),
])
def test_test_tool_refuses_options_the_config_cannot_take(options, match):
    with pytest.raises(SystemExit, match=match):
        _fast_hooks(*options)


def test_float32_queries_on_the_copy_only(monkeypatch):
    """By default the copy's head runs its decoder queries in float32 under autocast (the
    runner's model untouched); ``float32_queries=False`` leaves them to autocast. Under CPU
    bf16 autocast the two differ in the head's class logits."""
    model = build().eval()
    logits = {}
    for on in (True, False):
        runner = types.SimpleNamespace(model=model)
        logs = _hook_logs(monkeypatch)
        hook = HOOKS.build(dict(type='FastInferenceHook', float32_queries=on))
        hook.before_test(runner)
        fast = runner.model
        assert fast.pts_bbox_head.float32_queries is on and \
            not model.pts_bbox_head.float32_queries
        assert ('decoder queries in float32 under autocast' in logs[0]) is on
        seen = []
        fast.pts_bbox_head.register_forward_hook(
            lambda _, args, out: seen.append(out['thing_cls'][-1].clone()))
        _test_loop(runner, frames=1, autocast_dtype=torch.bfloat16)
        (logits[on], ) = seen
        hook.after_test(runner)
        assert runner.model is model
    assert logits[True].dtype == torch.float32
    assert (logits[True] - logits[False].float()).abs().max() > 1e-4


def test_float32_masks_on_the_copy_only(monkeypatch):
    """``float32_masks=True``: the copy's head keeps its mask logits in float32 under
    autocast (the runner's model untouched)."""
    model, runner, hook, logs = _fast_copy(monkeypatch, float32_masks=True)
    fast = runner.model
    assert fast.pts_bbox_head.float32_masks and not model.pts_bbox_head.float32_masks
    assert 'mask logits in float32 under autocast' in logs[0]
    seen = []
    fast.pts_bbox_head.register_forward_hook(
        lambda _, args, out: seen.append(out['thing_masks'][-1].dtype))
    _test_loop(runner, frames=1, autocast_dtype=torch.bfloat16)
    assert seen == [torch.float32]
    hook.after_test(runner)
    assert runner.model is model


@pytest.mark.parametrize('given, on', [(None, True), (False, False)])
def test_fixed_rig_inputs_by_default_and_off(monkeypatch, given, on):
    """By default (None) a detector that takes fixed rig inputs gets them on its copy;
    ``False`` turns them off on the copy even where the model's config set them."""
    model = build().eval()
    model.fixed_rig_inputs = not on
    runner = types.SimpleNamespace(model=model)
    logs = _hook_logs(monkeypatch)
    kwargs = {} if given is None else dict(fixed_rig_inputs=given)
    HOOKS.build(dict(type='FastInferenceHook', **kwargs)).before_test(runner)
    assert runner.model.fixed_rig_inputs is on and model.fixed_rig_inputs is not on
    assert ('camera rig inputs at fixed addresses' in logs[0]) is on


def test_fixed_rig_inputs_by_default_skip_a_detector_without_them():
    runner = types.SimpleNamespace(model=torch.nn.Linear(2, 2))
    HOOKS.build(dict(type='FastInferenceHook', cuda_graph_modules=[])).before_test(runner)
    assert not hasattr(runner.model, 'fixed_rig_inputs')


def test_fixed_rig_inputs_on_the_copy_only(monkeypatch):
    """The copy passes the rig's ranks and query plan to the two rig-dependent modules (the
    runner's model untouched); the same stream as the model's."""
    model = build().eval()
    want = _stream(model)
    runner = types.SimpleNamespace(model=model)
    logs = _hook_logs(monkeypatch)
    hook = HOOKS.build(dict(type='FastInferenceHook', fixed_rig_inputs=True))
    hook.before_test(runner)
    fast = runner.model
    assert fast.fixed_rig_inputs and not model.fixed_rig_inputs
    assert 'camera rig inputs at fixed addresses' in logs[0]
    got = _stream(fast)
    assert fast.img_view_transformer._rig.value is not None  # the rig's ranks were held
    assert model.img_view_transformer._rig.value is None
    for (sem, inst), (sem_ref, inst_ref) in zip(got, want):
        assert (sem != sem_ref).float().mean() < 0.01
        assert (inst != inst_ref).float().mean() < 0.01
    hook.after_test(runner)
    assert runner.model is model
