"""tools/analysis_tools/benchmark.py and get_flops.py on the tiny config on CPU: one streamed frame,
one training clip, FLOPs per stage. Fields and signs only (no timing assertions)."""
import json
import os.path as osp

import pytest
import torch

from trackocc.analysis.precision import split_mode
from trackocc.utils.synthetic_inputs import CAM_YAWS, camera_matrices

from repo_files import load_module

ROOT = osp.join(osp.dirname(__file__), '..', '..')
TOOLS = osp.join(ROOT, 'tools', 'analysis_tools')
TINY = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


def _load(name):
    return load_module(osp.join(TOOLS, f'{name}.py'), name)


@pytest.fixture(scope='module')
def bench():
    return _load('benchmark')


def test_split_mode():
    assert split_mode('fp32') == (None, None)
    assert split_mode('bf16') == (None, torch.bfloat16)
    assert split_mode('compile') == ('compile', None)
    assert split_mode('compile-fp16') == ('compile', torch.float16)
    assert split_mode('graph') == ('graph', None)
    assert split_mode('graph-bf16') == ('graph', torch.bfloat16)
    with pytest.raises(ValueError, match='unknown mode'):
        split_mode('int8')


def test_profile_steps_must_be_positive(bench, capsys):
    assert bench.parse_args([TINY, '--train', '--profile', 'p_']).profile_steps == 5
    with pytest.raises(SystemExit):
        bench.parse_args([TINY, '--train', '--profile', 'p_', '--profile-steps', '0'])
    assert '--profile-steps must be >= 1' in capsys.readouterr().err


def test_camera_matrices_project_forward_points():
    cams = camera_matrices(5, (256, 704))
    assert all(v.shape == (5, 4, 4) for v in cams.values())
    # a point 20 m along each camera's axis lands at its image centre, in front of it
    for n, yaw in enumerate(CAM_YAWS):
        p = torch.tensor([1.5 + 20 * torch.cos(torch.deg2rad(torch.tensor(yaw))),
                          20 * torch.sin(torch.deg2rad(torch.tensor(yaw))), 2.0, 1.0]).numpy()
        u, v, d, _ = cams['lidar2img'][n] @ p
        assert d > 0
        assert abs(u / d - 352) < 1e-2 and abs(v / d - 128) < 1e-2


def test_inference_and_train_json(bench, tmp_path):
    out = tmp_path / 'infer.json'
    # one warm-up frame: a frame's tracking (query interaction, memory bank) runs at the start
    # of the next frame (StreamState)
    bench.main([TINY, '--frames', '1', '--warmup', '1', '--max-live-tracks', '3', '--device',
                'cpu', '--json', str(out)])
    res = json.loads(out.read_text())
    assert res['kind'] == 'inference' and res['num_cams'] == 5 and res['params_m'] > 0
    fp32 = res['modes']['fp32']
    assert fp32['fps'] > 0 and fp32['latency']['mean_ms'] > 0
    assert 0 <= fp32['mean_live_tracks'] <= 3 and fp32['max_live_tracks'] == 3
    for stage in ('image_backbone_neck', 'view_transform', 'volume_encoder',
                  'occupancy_encoder', 'decoder_head', 'tracking', 'panoptic_merge'):
        assert fp32['stage_ms'][stage] > 0, stage
    assert sum(fp32['stage_ms'].values()) <= fp32['latency']['mean_ms'] * 1.001

    # training, with one profiled iteration after the timed one
    out = tmp_path / 'train.json'
    bench.main([TINY, '--train', '--frames', '1', '--warmup', '0', '--clip-frames', '2',
                '--device', 'cpu', '--json', str(out), '--profile', str(tmp_path / 'prof_'),
                '--profile-steps', '1'])
    tr = json.loads(out.read_text())['modes']['fp32']
    assert tr['iter_time']['mean_ms'] > 0 and tr['forward_ms'] > 0 and tr['backward_step_ms'] > 0
    assert tr['schedule_max_iters'] == 200 and tr['schedule_hours'] > 0
    assert torch.isfinite(torch.tensor(tr['loss_first'])) and tr['loss_first'] > 0
    assert tr['ema'] is None and tr['ema_ms'] == 0  # the tiny config averages no weights
    # the runner's log writes and optimizer wrapper of the config, and the wall clock's window
    assert (tr['runtime_info_hook'], tr['optim_wrapper']) == ('HostSyncFreeRuntimeInfoHook',
                                                            'HostSyncFreeOptimWrapper')
    assert tr['log_ms'] >= 0 and tr['wall_ms_per_iter'] >= tr['iter_time']['mean_ms'] * 0.5
    # the runtime's GarbageCollectionHook as the runner runs it: Python's collector off inside
    # the iterations, so none collected during the one timed iteration (interval 100)
    assert tr['gc_hook'] == dict(interval=100, generation=1, full_interval=1000, freeze=True)
    assert tr['gc']['collections'] == {'0': 0, '1': 0, '2': 0} and tr['gc_hook_ms'] >= 0
    # the profiler saw the backward pass and one step of the config's optimizer; the listing
    # of synchronising lines is CUDA-only
    assert tr['profile'] == dict(profiled_iterations=1, optimizer_steps=1)
    text = (tmp_path / 'prof_fp32.txt').read_text()
    assert text.startswith('# 1 iterations, per iteration: ')
    assert '## by self host time' in text and '_backward' in text
    assert 'device time' not in text and 'synchronise' not in text


def test_train_ab_rounds_switch_a_model_setting(bench, tmp_path, monkeypatch):
    """``--train --ab-setting KEY=VALUE``: the training iterations as A/B rounds in one
    process, the setting on in the B runs only and restored after them."""
    args = bench.parse_args([TINY, '--train', '--mode', 'fp32', '--ab-setting',
                             'clip_image_batch=False', 'pts_bbox_head.float32_masks=True'])
    assert bench.ab_settings(args) == dict(clip_image_batch=False,
                                           **{'pts_bbox_head.float32_masks': True})
    assert bench.run_plan(args) == [('fp32', 'fp32', False), ('fp32+ab', 'fp32', True),
                                    ('fp32#2', 'fp32', False), ('fp32+ab#2', 'fp32', True)]
    seen = []
    time_training = bench.time_training

    def recording(cfg, model, *a, **k):
        seen.append(model.clip_image_batch)
        return time_training(cfg, model, *a, **k)

    monkeypatch.setattr(bench, 'time_training', recording)
    out = tmp_path / 'train_ab.json'
    bench.main([TINY, '--train', '--frames', '1', '--warmup', '0', '--clip-frames', '2',
                '--device', 'cpu', '--ab-rounds', '1', '--ab-setting',
                'clip_image_batch=False', '--json', str(out)])
    assert seen == [True, False]
    res = json.loads(out.read_text())
    assert list(res['modes']) == ['fp32', 'fp32+ab']
    summary = res['ab_summary']['fp32']
    assert summary['a']['runs'] == ['fp32'] and summary['b']['runs'] == ['fp32+ab']
    assert summary['a']['mean_iter_ms'] == res['modes']['fp32']['iter_time']['mean_ms']
    assert summary['iter_ratio_b_over_a'] > 0
    assert res['ab']['setting'] == ['clip_image_batch=False']


def test_train_times_the_configs_ema_update(bench, tmp_path):
    """``--train`` runs the config's EMA hook after every iteration, as the runner does (the
    paper config's ``InitialWeightsEMAHook`` + ``RampedDecayEMA`` here on the tiny model);
    ``--no-ema`` leaves it out."""
    from trackocc.analysis.model_setup import build_model, load_config
    from trackocc.analysis.training import build_ema_hook
    with_ema = tmp_path / 'tiny_ema.py'
    with_ema.write_text(f"_base_ = [{TINY!r}]\ncustom_hooks = [dict(\n"
                        "    type='InitialWeightsEMAHook', ema_type='RampedDecayEMA', "
                        "decay=0.999,\n    init_updates=10560, ramp_updates=2000, "
                        "update_buffers=True, priority=49)]\n")
    args = [str(with_ema), '--train', '--frames', '1', '--warmup', '1', '--clip-frames', '2',
            '--device', 'cpu']
    out = tmp_path / 'train.json'
    bench.main(args + ['--json', str(out)])
    tr = json.loads(out.read_text())['modes']['fp32']
    assert tr['ema'] == 'RampedDecayEMA' and tr['ema_ms'] > 0
    assert bench.parse_args(args + ['--no-ema']).no_ema and not bench.parse_args(args).no_ema
    # --no-gc-hook: the automatic collector, whose collections inside the iteration count
    out = tmp_path / 'train_auto_gc.json'
    bench.main(args + ['--no-ema', '--no-gc-hook', '--json', str(out)])
    tr = json.loads(out.read_text())['modes']['fp32']
    assert tr['gc_hook'] is None and tr['gc']['collections']['0'] > 0
    assert tr['gc']['pause_ms'] > 0 and tr['gc']['max_pause_ms'] > 0
    # the hook as benchmark.py sets it up: averaged from the initial weights (steps 1), one
    # update per iteration, the average between the initial and the current weights
    cfg = load_config(TINY, {'custom_hooks': [dict(type='InitialWeightsEMAHook',
                                                   ema_type='RampedDecayEMA', decay=0.5,
                                                   ramp_updates=1e-9, priority=49)]})
    model = build_model(cfg, None, 'cpu')
    hook, runner = build_ema_hook(cfg, model, 10)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert int(hook.ema_model.steps) == 1
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    runner.iter = 0
    hook.after_train_iter(runner, 0)
    assert int(hook.ema_model.steps) == 2
    name, p = next(iter(model.named_parameters()))
    torch.testing.assert_close(hook.ema_model.module.state_dict()[name], start[name] + 0.5)
    assert build_ema_hook(load_config(TINY), model, 10) is None


def test_get_flops_per_stage(tmp_path):
    flops = _load('get_flops')
    out = tmp_path / 'flops.json'
    res = flops.main([TINY, '--device', 'cpu', '--max-live-tracks', '4', '--json', str(out)])
    assert res['live_tracks'] <= 4 and res['thing_queries'] <= 4 + 20  # 20 fresh queries
    assert json.loads(out.read_text())['total_gflops'] == pytest.approx(res['total_gflops'])
    stages = res['stages']
    for stage in ('image_backbone_neck', 'view_transform', 'volume_encoder',
                  'occupancy_encoder', 'decoder_head'):
        assert stages[stage]['gflops'] > 0 and stages[stage]['params_m'] > 0, stage
    assert sum(s['gflops'] for s in stages.values()) == pytest.approx(res['total_gflops'])
    assert sum(s['params_m'] for s in stages.values()) == pytest.approx(res['total_params_m'])


def test_autocast_weights_only_in_low_precision_modes(bench, tmp_path):
    """--autocast-weights holds the probed layers in bf16 for the bf16 mode only, and gives
    the float32 weights back afterwards."""
    out = tmp_path / 'held.json'
    res = bench.main([TINY, '--frames', '1', '--warmup', '1', '--max-live-tracks', '3',
                      '--device', 'cpu', '--mode', 'fp32', 'bf16', '--autocast-weights',
                      '--json', str(out)])
    modes = json.loads(out.read_text())['modes']
    assert 'autocast_weights' not in modes['fp32'] and 'error' not in modes['bf16']
    assert modes['bf16']['autocast_weights'] > 10 and modes['bf16']['fps'] > 0
    assert res['modes']['bf16']['autocast_weights'] == modes['bf16']['autocast_weights']


def test_train_marks_each_iteration_for_cudagraph_trees(bench, tmp_path, monkeypatch):
    """``--train --mode compile --compile-mode reduce-overhead``: a CUDA-graph tree step mark
    before every training iteration (warm-up, timed and profiled), as before every frame of
    an inference stream; the compile itself is left out here (the mark is what is checked)."""
    marks = []
    monkeypatch.setattr(bench, 'compile_modules', lambda model, names, *a, **k: list(names))
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    out = tmp_path / 'train.json'
    bench.main([TINY, '--train', '--mode', 'compile', '--compile-mode', 'reduce-overhead',
                '--frames', '2', '--warmup', '1', '--clip-frames', '2', '--device', 'cpu',
                '--json', str(out), '--profile', str(tmp_path / 'prof_'), '--profile-steps',
                '1'])
    tr = json.loads(out.read_text())['modes']['compile']
    assert tr['iters'] == 2 and tr['profile']['profiled_iterations'] == 1
    assert len(marks) == 1 + 2 + 1  # warm-up, timed, profiled (no CUDA: no sync listing)
    marks.clear()
    bench.main([TINY, '--train', '--mode', 'compile', '--frames', '1', '--warmup', '0',
                '--clip-frames', '2', '--device', 'cpu', '--json', str(out)])
    assert marks == []  # the default compile mode has no CUDA graphs to mark


def test_compile_modules_default_by_kind(bench):
    from trackocc.utils.compile_modules import COMPILE_MODULES, TRAINING_COMPILE_MODULES
    assert bench.parse_args([TINY]).compile_modules == list(COMPILE_MODULES)
    assert bench.parse_args([TINY, '--train']).compile_modules == list(TRAINING_COMPILE_MODULES)
    assert bench.parse_args([TINY, '--train', '--compile-modules', 'img_neck']).compile_modules \
        == ['img_neck']


@pytest.mark.parametrize('configured, dtype, built', [
    ('HostSyncFreeAmpOptimWrapper', None, 'HostSyncFreeOptimWrapper'),
    ('HostSyncFreeOptimWrapper', torch.bfloat16, 'HostSyncFreeAmpOptimWrapper'),
    ('AmpOptimWrapper', None, 'OptimWrapper'),
    ('OptimWrapper', torch.float16, 'AmpOptimWrapper'),
])
def test_the_timed_optimizer_wrapper_keeps_the_configs_family(configured, dtype, built,
                                                              monkeypatch):
    from mmengine.config import Config
    from mmengine.optim import AmpOptimWrapper
    from mmengine.registry import init_default_scope

    import trackocc.engine  # noqa: F401  (registers the wrappers)
    from trackocc.analysis.training import build_train_optim_wrapper
    if dtype is not None:  # MMEngine's AMP wrapper asserts a GPU before anything else
        monkeypatch.setattr('mmengine.optim.optimizer.amp_optimizer_wrapper.'
                            'is_cuda_available', lambda: True)
    init_default_scope('trackocc')
    cfg = Config(dict(optim_wrapper=dict(type=configured, loss_scale='dynamic',
                                         optimizer=dict(type='SGD', lr=0.1))))
    wrapper = build_train_optim_wrapper(cfg, torch.nn.Linear(2, 2), dtype)
    assert type(wrapper).__name__ == built
    if dtype is not None:
        assert isinstance(wrapper, AmpOptimWrapper) and wrapper.cast_dtype == dtype
