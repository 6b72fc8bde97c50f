"""benchmark.py fast-path options. --graph-compile-modules: sub-modules torch.compile d before
the graph modes capture them (no compile mode with CUDA graphs of its own; on CUDA the tiny
config's graph-bf16 mode with a compiled sub-module inside a graph; the helper itself in
tests/utils/test_compile_modules.py). --tf32-matmul: TF32 float32 matmuls in every mode but
fp32, the setting restored."""
import json
import os.path as osp

import pytest
import torch

from repo_files import load_module

ROOT = osp.join(osp.dirname(__file__), '..', '..')
BENCH = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py')
TINY = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


@pytest.fixture(scope='module')
def bench():
    return load_module(BENCH, 'benchmark')


def test_parse_refuses_compile_modes_with_their_own_graphs(bench, capsys):
    args = bench.parse_args([TINY, '--mode', 'graph-bf16', '--graph-compile-modules',
                             'occ_encoder.upsampler'])
    assert args.graph_compile_modules == ['occ_encoder.upsampler']
    assert bench.parse_args([TINY]).graph_compile_modules == []
    with pytest.raises(SystemExit):
        bench.parse_args([TINY, '--mode', 'graph-bf16', '--graph-compile-modules',
                          'occ_encoder.upsampler', '--compile-mode', 'reduce-overhead'])
    assert 'CUDA graphs of its own' in capsys.readouterr().err


def test_tf32_matmul_in_every_mode_but_fp32(bench, tmp_path, monkeypatch):
    seen = {}

    def fake_run_mode(args, cfg, model, device, dtype, mode, *rest):
        seen[mode] = torch.get_float32_matmul_precision()
        return dict(fps=1.0)

    monkeypatch.setattr(bench, 'run_mode', fake_run_mode)
    before = torch.get_float32_matmul_precision()
    assert before == 'highest'  # the float32 default the reference mode runs in
    res = bench.main([TINY, '--device', 'cpu', '--mode', 'fp32', 'bf16', '--tf32-matmul',
                      '--json', str(tmp_path / 'tf32.json')])
    assert seen == dict(fp32='highest', bf16='high')
    assert 'tf32_matmul' not in res['modes']['fp32'] and res['modes']['bf16']['tf32_matmul']
    assert torch.get_float32_matmul_precision() == before
    seen.clear()
    bench.main([TINY, '--device', 'cpu', '--mode', 'bf16'])
    assert seen == dict(bf16='highest')  # off unless asked


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_compiled_sub_module_replays_inside_the_graph(bench, tmp_path):
    out = tmp_path / 'graph_compile.json'
    bench.main([TINY, '--device', 'cuda', '--mode', 'graph-bf16', '--frames', '3',
                '--warmup', '4', '--max-live-tracks', '8', '--graph-modules', 'occ_encoder',
                '--graph-compile-modules', 'occ_encoder.upsampler', '--json', str(out)])
    result = json.loads(out.read_text())
    assert result['graph_compiled_modules'] == ['occ_encoder.upsampler']
    mode = result['modes']['graph-bf16']
    assert 'error' not in mode
    assert mode['cuda_graphs']['occ_encoder']['replays'] >= 3


def test_ab_rounds_plan_and_refusals(bench, capsys):
    args = bench.parse_args([TINY, '--mode', 'fp32', 'graph-bf16', 'bf16', '--query-budget',
                             '60', '--ab-graph-modules', 'panoptic_merge',
                             '--ab-compile-modules', 'query_interaction'])
    assert bench.run_plan(args) == [
        ('fp32', 'fp32', False), ('graph-bf16', 'graph-bf16', False),
        ('graph-bf16+ab', 'graph-bf16', True), ('graph-bf16#2', 'graph-bf16', False),
        ('graph-bf16+ab#2', 'graph-bf16', True), ('bf16', 'bf16', False)]
    for ok in (['--fixed-track-rows', '--graph-modules', 'memory_bank'],
               ['--ab-fixed-track-rows', '--ab-graph-modules', 'memory_bank'],
               ['--fixed-track-rows', '--ab-graph-modules', 'track_carry'],
               ['--fixed-track-rows', '--graph-modules', 'pts_bbox_head', 'panoptic_merge',
                '--ab-graph-modules', 'track_settle', '--ab-ungraph-modules',
                'panoptic_merge']):
        bench.parse_args([TINY, '--mode', 'graph', '--query-budget', '60', *ok])
    rekey = bench.parse_args([TINY, '--mode', 'graph', '--graph-modules', 'img_backbone',
                              'occ_encoder', '--ab-graph-rekey-warmup', '0'])
    assert bench.ab_on(rekey) and bench.ab_settings(rekey) == {
        'img_backbone.rekey_warmup': 0, 'occ_encoder.rekey_warmup': 0}
    keep = bench.parse_args([TINY, '--mode', 'graph', '--graph-modules', 'img_backbone',
                             '--ab-graph-keep-memory'])
    assert bench.ab_on(keep) and bench.ab_settings(keep) == {'img_backbone.keep_memory': True}
    queries = bench.parse_args([TINY, '--mode', 'graph', '--ab-float32-queries'])
    assert bench.ab_on(queries) and bench.ab_settings(queries) == {
        'pts_bbox_head.float32_queries': True}
    masks = bench.parse_args([TINY, '--mode', 'graph', '--ab-float32-masks'])
    assert bench.ab_on(masks) and bench.ab_settings(masks) == {
        'pts_bbox_head.float32_masks': True}
    rigs = bench.parse_args([TINY, '--mode', 'graph', '--ab-fixed-rig-inputs'])
    assert bench.ab_on(rigs) and bench.ab_settings(rigs) == dict(fixed_rig_inputs=True)
    fixed = bench.parse_args([TINY, '--mode', 'graph', '--query-budget', '60',
                              '--ab-fixed-track-rows'])
    assert bench.ab_settings(fixed) == dict(fixed_track_rows=True)
    plain = bench.parse_args([TINY, '--mode', 'fp32', 'graph'])
    assert bench.ab_settings(plain) is None
    assert bench.run_plan(plain) == [('fp32', 'fp32', False), ('graph', 'graph', False)]
    refused = [
        (['--mode', 'fp32', 'bf16', '--ab-compile-modules', 'memory_bank'], 'graph modes'),
        (['--mode', 'graph', '--ab-compile-modules', 'memory_bank', '--ab-rounds', '0'],
         '--ab-rounds must be >= 1'),
        (['--mode', 'graph', '--train', '--ab-compile-modules', 'memory_bank'],
         '--train takes --ab-setting only'),
        (['--train', '--ab-setting', 'clip_image_batch=False', '--ab-graph-rekey-warmup',
          '0'], '--train takes --ab-setting only'),  # 0 is given too
        (['--mode', 'graph', '--ab-setting', 'clip_image_batch'], 'takes KEY=VALUE'),
        (['--mode', 'graph', '--ab-setting', 'clip_image_batch=off'], 'no Python literal'),
        (['--mode', 'graph', '--ab-graph-modules', 'panoptic_merge'], 'needs --query-budget'),
        (['--mode', 'graph', '--graph-modules', 'occ_encoder', '--graph-stable-outputs',
          'img_view_transformer'], '--graph-stable-outputs img_view_transformer: not in'),
        (['--mode', 'graph', '--graph-modules', 'occ_encoder', '--ab-stable-outputs',
          'img_neck'], '--ab-stable-outputs img_neck: not in'),
        (['--mode', 'graph', '--graph-modules', 'occ_encoder', '--graph-stable-outputs',
          'occ_encoder', '--ab-stable-outputs', 'occ_encoder'], 'already stable in every run'),
        (['--mode', 'graph', '--ab-fixed-track-rows'], '--ab-fixed-track-rows needs --query'),
        (['--mode', 'graph', '--graph-rekey-warmup', '-1'], '--graph-rekey-warmup must be >= 0'),
        (['--mode', 'graph', '--ab-graph-rekey-warmup', '-2'],
         '--ab-graph-rekey-warmup must be >= 0'),
        (['--fixed-track-rows'], '--fixed-track-rows needs --query-budget'),
        (['--mode', 'graph', '--query-budget', '60', '--fixed-track-rows',
          '--ab-fixed-track-rows'], 'fixed rows in every run already'),
        (['--mode', 'graph', '--query-budget', '60', '--graph-modules', 'query_interaction'],
         'query_interaction need fixed track rows'),
        (['--mode', 'graph', '--query-budget', '60', '--ab-graph-modules', 'memory_bank'],
         'memory_bank need fixed track rows'),
        (['--mode', 'graph', '--query-budget', '60', '--fixed-track-rows', '--graph-modules',
          'memory_bank', '--ab-graph-modules', 'track_carry'],
         "'track_carry' calls ['memory_bank']: graph either it or them"),
        (['--mode', 'graph', '--query-budget', '60', '--fixed-track-rows', '--graph-modules',
          'panoptic_merge', '--ab-graph-modules', 'track_settle'],
         "B runs: 'track_settle' calls ['panoptic_merge']"),
        (['--mode', 'graph', '--ab-ungraph-modules', 'panoptic_merge'],
         '--ab-ungraph-modules panoptic_merge: not in --graph-modules'),
        (['--mode', 'graph', '--graph-keep-memory', '--ab-graph-keep-memory'],
         'every run keeps the memory already'),
        (['--mode', 'graph', '--fixed-rig-inputs', '--ab-fixed-rig-inputs'],
         'every run fixes the rig inputs already'),

    ]
    for extra, message in refused:
        with pytest.raises(SystemExit):
            bench.parse_args([TINY, *extra])
        assert message in capsys.readouterr().err, extra


def test_ab_runs_switch_the_variant_modules(bench, monkeypatch):
    """The main loop on CPU (graph modes allowed, each run's measurement faked): the B runs
    see the merge wrapped and the tracking compiled, the A runs before and after do not."""
    from trackocc.utils.cuda_graph import CUDAGraphModule
    seen = {}

    def fake_run_mode(args, cfg, model, device, dtype, label, *rest):
        seen[label] = (isinstance(model.panoptic_merge, CUDAGraphModule),
                       hasattr(model.query_interaction, '_orig_mod'),
                       isinstance(model.occ_encoder, CUDAGraphModule)
                       and model.occ_encoder.stable_output,
                       isinstance(model.img_neck, CUDAGraphModule)
                       and model.img_neck.stable_output, model.fixed_track_rows,
                       model.pts_bbox_head.float32_queries, model.fixed_rig_inputs)
        return dict(steady_state=dict(fps=50.0 if '+ab' in label else 40.0,
                                      latency=dict(median_ms=20.0), stage_ms=dict(x=1.0)))

    monkeypatch.setattr(bench, 'run_mode', fake_run_mode)
    monkeypatch.setattr(bench, 'check_graph_device', lambda device, emulate=False: None)
    res = bench.main([TINY, '--device', 'cpu', '--mode', 'fp32', 'graph', '--query-budget',
                      '60', '--max-live-tracks', '8', '--graph-modules', 'occ_encoder',
                      'img_neck', '--graph-stable-outputs', 'img_neck',
                      '--ab-graph-modules', 'panoptic_merge', '--ab-compile-modules',
                      'query_interaction', '--ab-stable-outputs', 'occ_encoder',
                      '--ab-fixed-track-rows', '--ab-float32-queries',
                      '--ab-fixed-rig-inputs'])
    a_runs = (False, False, False, True, False, False, False)
    b_runs = (True, ) * 7
    assert seen == {'fp32': (False, ) * 7, 'graph': a_runs,
                    'graph+ab': b_runs, 'graph#2': a_runs, 'graph+ab#2': b_runs}
    assert res['ab'] == dict(graph_modules=['panoptic_merge'],
                             compile_modules=['query_interaction'],
                             stable_outputs=['occ_encoder'], fixed_track_rows=True,
                             graph_rekey_warmup=None, ungraph_modules=[],
                             float32_queries=True, float32_masks=False,
                             graph_keep_memory=False,
                             fixed_rig_inputs=True, setting=[], rounds=2)
    assert not res['fixed_track_rows'] and not res['fixed_rig_inputs']
    assert res['graph_stable_outputs'] == ['img_neck']
    seen.clear()
    res = bench.main([TINY, '--device', 'cpu', '--mode', 'fp32', '--query-budget', '60',
                      '--max-live-tracks', '8', '--fixed-track-rows'])
    assert res['fixed_track_rows'] and seen['fp32'][4]  # every mode
    assert 'ab_summary' not in res  # held-out mode only (steady frames)
    # a variant module that every graph run already graphs is refused, naming it
    res = bench.main([TINY, '--device', 'cpu', '--mode', 'graph', '--keep-going',
                      '--graph-modules', 'occ_encoder', '--ab-graph-modules', 'occ_encoder',
                      '--max-live-tracks', '8'])
    assert "'occ_encoder' is already a CUDA graph" in res['modes']['graph+ab']['error']


def test_graph_modes_need_a_cuda_device_unless_emulated(bench, capsys):
    with pytest.raises(RuntimeError, match='need a CUDA device .*--emulate-graphs'):
        bench.check_graph_device(torch.device('cpu'))
    bench.check_graph_device(torch.device('cpu'), emulate=True)  # emulated: any device
    with pytest.raises(SystemExit):  # nothing to emulate
        bench.parse_args([TINY, '--mode', 'fp32', '--emulate-graphs'])
    assert '--emulate-graphs emulates the graph* modes' in capsys.readouterr().err
