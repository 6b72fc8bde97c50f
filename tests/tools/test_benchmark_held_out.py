"""tools/analysis_tools/benchmark.py --data-root on CPU: the tiny config with saved random weights
streams a tiny synthetic held-out set; per-frame lists, track births and OccSTQ are checked
against tools/test.py (format-only) + tools/evaluate_predictions.py on the same weights and data."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from repo_files import load_module
from tiny_held_out import TINY, make_tiny_held_out

FREE = 15


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """2 held-out sequences x 2 frames and a checkpoint of the tiny config's seeded random
    initialisation."""
    tmp = tmp_path_factory.mktemp('held_out')
    root, ckpt = make_tiny_held_out(tmp)
    return dict(tmp=tmp, root=root, ckpt=ckpt)


def test_held_out_benchmark_matches_test_tool(setup):
    tmp, root, ckpt = setup['tmp'], setup['root'], setup['ckpt']
    bench = load_module('tools/analysis_tools/benchmark.py', 'benchmark_held_out')
    out = tmp / 'bench.json'
    # one warm-up frame: the scored pass must restart the stream from the first frame
    # --profile streams a held-out frame (frame 2: a sequence start) 5 more times per mode;
    # the next mode must still see that frame start its sequence
    bench.main([TINY, ckpt, '--data-root', root, '--device', 'cpu', '--warmup', '1',
                '--mode', 'fp32', 'bf16', '--profile', str(tmp / 'prof_'), '--json', str(out),
                '--autocast-weights'])  # bf16: weights held, probed on the first held-out frame
    res = json.loads(out.read_text())
    assert 'autocast_weights' not in res['modes']['fp32']
    assert res['modes']['bf16']['autocast_weights'] > 10
    assert res['held_out_frames'] == 4 and res['held_out_sequences'] == 2
    for mode in ('fp32', 'bf16'):
        result = res['modes'][mode]
        assert result['frames'] == 4 and result['fps'] > 0
        assert result['profile']['profiled_frames'] == 5
        assert (tmp / f'prof_{mode}.txt').is_file()
        live, births = result['live_tracks'], result['births']
        assert len(live) == len(births) == len(result['occupied_voxels']) == 4
        for i in range(4):
            assert 0 <= births[i] <= live[i]
            if i % 2 == 0:  # a sequence start: every live track is new
                assert births[i] == live[i], (mode, i, live, births)
            else:  # a track alive now was alive before or was born now
                assert live[i] <= live[i - 1] + births[i]
        assert result['mean_births'] == pytest.approx(sum(births) / 4)
        assert len(result['frame_ms']) == 4 and min(result['frame_ms']) > 0
        assert result['fps'] == pytest.approx(4000.0 / sum(result['frame_ms']))
        # nothing is CUDA-graphed on CPU: every frame is a steady one
        assert result['graph_steady'] == [True] * 4
        assert result['steady_state']['frames'] == 4
        assert result['steady_state']['fps'] == pytest.approx(result['fps'])
        steady_stages = result['steady_state']['stage_ms']
        assert steady_stages.keys() == result['stage_ms'].keys() and 'other' in steady_stages
        for stage, ms in steady_stages.items():
            assert ms == pytest.approx(result['stage_ms'][stage]), stage
        assert result['profile']['warmup_frames'] == 1
        assert result['profile']['graph_captures_during_profile'] == 0
    fp32 = res['modes']['fp32']
    occupied = fp32['occupied_voxels']
    assert res['occstq_guard']['reference_mode'] == 'fp32'

    # the same weights through tools/test.py (the Runner's test loop), predictions written out
    test_tool = load_module('tools/test.py', 'test_tool_held_out')
    preds = tmp / 'preds'
    root_slash = root.rstrip('/') + '/'
    test_tool.main([TINY, ckpt, '--format-only', '--out-dir', str(preds), '--work-dir',
                    str(tmp / 'work'), '--cfg-options',
                    f'test_dataloader.dataset.data_root={root_slash}',
                    'test_dataloader.num_workers=0'])
    files = sorted(preds.glob('*.npz'), key=lambda p: int(p.stem))
    assert len(files) == 4
    for i, path in enumerate(files):  # sample_idx order = stream order
        with np.load(path) as npz:
            sem, inst = npz['pano_sem'], npz['pano_inst']
        assert int((sem != FREE).sum()) == occupied[i], path
        assert len(np.unique(inst[inst > 0])) <= live[i], path  # output ids are live tracks

    evaluate = load_module('tools/evaluate_predictions.py', 'evaluate_held_out')
    for settings, extra in (('reference', []), ('strict', ['--strict'])):
        js = tmp / f'eval_{settings}.json'
        assert evaluate.main(['--gt-root', osp.join(root, 'pano_voxel04'), '--pred-dir',
                              str(preds), '--split', 'validation', '--json', str(js),
                              '--io-workers', '0', '--quiet', *extra]) == 0
        offline = json.loads(js.read_text())
        for key in ('OccSTQ', 'AQ', 'mIoU'):
            assert fp32['occstq'][settings][key] == pytest.approx(offline[key], abs=1e-9), \
                (settings, key)
    # random weights still detect something: the comparison is not of two empty predictions
    assert fp32['occstq']['reference']['mIoU'] > 0

    # per sequence: each one scored on its own; bf16's predictions against fp32's
    bf16 = res['modes']['bf16']
    for result in (fp32, bf16):
        assert [s['frames'] for s in result['occstq_by_sequence']] == [2, 2]
        assert len({s['sequence'] for s in result['occstq_by_sequence']}) == 2
    assert 'agreement' not in fp32  # the reference itself
    agreement = bf16['agreement']
    assert len(agreement['semantic_diff_voxels']) == len(agreement['instance_diff_voxels']) == 4
    differs = [a + b > 0 for a, b in zip(agreement['semantic_diff_voxels'],
                                         agreement['instance_diff_voxels'])]
    assert agreement['first_differing_frame'] == (differs.index(True) if any(differs) else None)
    assert [s['differing_frames'] for s in agreement['sequences']] == [sum(differs[:2]),
                                                                       sum(differs[2:])]
    seq_diffs = res['occstq_guard']['modes']['bf16']['sequence_diff_points']
    assert seq_diffs == pytest.approx([100 * (b['OccSTQ'] - a['OccSTQ']) for a, b in zip(
        fp32['occstq_by_sequence'], bf16['occstq_by_sequence'])], nan_ok=True)


def test_steady_frames_exclude_compiles(setup):
    """A compiled module outside the CUDA graphs (the query interaction, whose number of
    tracks changes) compiles on its first calls: those frames are not steady ones."""
    from trackocc.analysis.held_out_stream import load_held_out_frames, stream_held_out
    from trackocc.analysis.model_setup import build_model, load_config
    from trackocc.utils.compile_modules import compiled_graphs
    cfg = load_config(TINY)
    model = build_model(cfg, setup['ckpt'], 'cpu')
    frames = load_held_out_frames(cfg, model, setup['root'])
    assert len(frames) == 4  # two sequences of two frames
    torch._dynamo.reset()
    model.query_interaction = torch.compile(model.query_interaction, backend='eager')
    before = compiled_graphs()
    res = stream_held_out(model, frames, torch.device('cpu'))
    assert compiled_graphs() > before
    # frame 0 starts a sequence (no query interaction); frame 1 carries its tracks: the
    # first compiled call
    assert res['graph_steady'][:2] == [True, False]
    assert res['steady_state']['frames'] == sum(res['graph_steady']) < 4
    # the steady stage times are means over the steady frames only
    steady_ms = [t for t, ok in zip(res['frame_ms'], res['graph_steady']) if ok]
    steady_stages = res['steady_state']['stage_ms']
    assert sum(steady_stages.values()) == pytest.approx(sum(steady_ms) / len(steady_ms))
    # the other frames are the start-up ones; the sequences' first frames are counted apart
    start_up_ms = [t for t, ok in zip(res['frame_ms'], res['graph_steady']) if not ok]
    assert res['start_up']['frames'] == len(start_up_ms) == 4 - len(steady_ms)
    assert res['start_up']['mean_ms'] == pytest.approx(sum(start_up_ms) / len(start_up_ms))
    assert res['start_up']['share'] == pytest.approx(sum(start_up_ms) / sum(res['frame_ms']))
    starts = [i for i, f in enumerate(frames) if f.meta.get('start_of_sequence')]
    assert res['sequence_starts']['frames'] == len(starts) >= 1
    assert res['sequence_starts']['mean_ms'] == pytest.approx(
        sum(res['frame_ms'][i] for i in starts) / len(starts))
    assert sum(res['stage_ms'].values()) == pytest.approx(res['latency']['mean_ms'])


# the fast path's graphed modules (the rig-dependent ones with stable outputs)
FAST_GRAPHS = ('--graph-modules', 'img_backbone', 'img_neck', 'img_view_transformer',
               'volume_encoder_backbone', 'volume_encoder_neck', 'occ_encoder', 'pts_bbox_head',
               'panoptic_merge')


def _assert_same_predictions(a: dict, b: dict, voxels: float) -> None:
    """Two modes' per-frame occupied voxels within the fraction ``voxels`` of A's and their
    OccSTQ within 1e-3 (reference and strict settings)."""
    for frame, (occ_a, occ_b) in enumerate(zip(a['occupied_voxels'], b['occupied_voxels'])):
        assert abs(occ_a - occ_b) <= voxels * max(occ_a, 1), frame
    for settings in ('reference', 'strict'):
        assert abs(a['occstq'][settings]['OccSTQ'] - b['occstq'][settings]['OccSTQ']) <= 1e-3


def _cuda_bench(setup, tag: str, *options, modes=('fp32', 'graph-bf16')) -> dict:
    """benchmark.py's JSON for ``modes`` (query budget 200) on the CUDA device over the
    held-out frames, with ``options``."""
    bench = load_module('tools/analysis_tools/benchmark.py', f'benchmark_held_out_{tag}')
    out = setup['tmp'] / f'{tag}.json'
    bench.main([TINY, setup['ckpt'], '--data-root', setup['root'], '--device', 'cuda',
                '--mode', *modes, '--query-budget', '200', *options,
                '--json', str(out)])
    return json.loads(out.read_text())


def test_emulated_graphs_check_an_ab_switch_on_the_cpu(setup):
    """--emulate-graphs: the graph mode on the CPU with its CUDA graphs emulated. A: the hook's
    default fast path (every dense sub-network and the merge graphed, stable outputs of the
    rig-dependent graphs, a new rig captured at its first frame, fixed rig inputs); B: + the
    tracks at fixed rows and the tracking as two graphs (track_carry, track_settle; the merge's
    own graph off in B). Both predict what fp32 eager predicts, frame by frame; only B replays
    the tracking's graphs, and the rig-dependent graphs capture once per side."""
    bench = load_module('tools/analysis_tools/benchmark.py', 'benchmark_held_out_emulated')
    out = setup['tmp'] / 'emulated.json'
    bench.main([TINY, setup['ckpt'], '--data-root', setup['root'], '--device', 'cpu',
                '--mode', 'fp32', 'graph', '--query-budget', '200', '--warmup', '3',
                *FAST_GRAPHS, '--graph-stable-outputs', 'img_view_transformer', 'occ_encoder',
                '--graph-rekey-warmup', '0', '--fixed-rig-inputs', '--emulate-graphs',
                '--ab-fixed-track-rows', '--ab-graph-modules', 'track_carry', 'track_settle',
                '--ab-ungraph-modules', 'panoptic_merge', '--ab-rounds', '1',
                '--json', str(out)])
    res = json.loads(out.read_text())
    assert list(res['modes']) == ['fp32', 'graph', 'graph+ab'] and res['fixed_rig_inputs']
    eager, a, b = (res['modes'][k] for k in ('fp32', 'graph', 'graph+ab'))
    assert 'error' not in a and 'error' not in b, (a.get('error'), b.get('error'))
    assert sum(eager['occupied_voxels']) > 0 and sum(eager['births']) > 0  # real outputs
    for mode in (a, b):
        assert mode['occupied_voxels'] == eager['occupied_voxels']
        assert mode['births'] == eager['births']
        assert mode['occstq'] == eager['occstq']
    assert 'track_carry' not in a['cuda_graphs']
    for name in ('track_carry', 'track_settle'):
        assert b['cuda_graphs'][name]['replays'] > 0, name
    assert 'panoptic_merge' not in b['cuda_graphs']  # B runs the merge inside track_settle
    for name in ('img_view_transformer', 'occ_encoder'):  # two rigs, one graph each side
        a_caps = a['cuda_graphs'][name]['captures']
        assert a_caps == 1 and b['cuda_graphs'][name]['captures'] - a_caps <= 1, name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_ab_rounds_switch_the_merge_graph_and_the_compiled_tracking(setup):
    """--ab-*: graph-bf16 without (A) and with (B) the merge graphed and the tracking
    compiled, two rounds in one process; the B runs replay the merge, the A runs do not."""
    res = _cuda_bench(setup, 'ab', '--warmup', '4', '--graph-modules', 'img_backbone',
                      'img_neck', 'occ_encoder', 'pts_bbox_head', '--ab-graph-modules',
                      'panoptic_merge', '--ab-compile-modules', 'query_interaction',
                      'memory_bank')
    assert list(res['modes']) == ['fp32', 'graph-bf16', 'graph-bf16+ab', 'graph-bf16#2',
                                  'graph-bf16+ab#2']
    for label, mode in res['modes'].items():
        assert 'error' not in mode, label
        assert mode['frames'] == 4
        graphs = mode.get('cuda_graphs', {})
        if label != 'fp32':
            assert graphs['pts_bbox_head']['replays'] > 0, label
            assert ('panoptic_merge' in graphs) == ('+ab' in label), label
    assert res['modes']['graph-bf16+ab#2']['cuda_graphs']['panoptic_merge']['replays'] > 0
    summary = res['ab_summary']['graph-bf16']
    assert set(summary) >= {'a', 'b'} and res['ab']['rounds'] == 2
    assert set(res['occstq_guard']['modes']) == set(res['modes']) - {'fp32'}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_ab_float32_queries_capture_the_head_again_at_each_switch(setup):
    """--ab-float32-queries: the graphed head captures again when B switches the decoder's
    queries to float32 and again when A gets them back (a graph runs what it captured). The
    occupancy encoder runs eagerly: the head copies its inputs, so no new camera rig makes the
    head capture again, only the switches do."""
    res = _cuda_bench(setup, 'queries', '--warmup', '4', '--graph-modules', 'img_backbone',
                      'img_neck', 'pts_bbox_head', '--ab-float32-queries')
    assert res['ab']['float32_queries'] and res['ab']['rounds'] == 2
    captures = []
    for label in ('graph-bf16', 'graph-bf16+ab', 'graph-bf16#2', 'graph-bf16+ab#2'):
        mode = res['modes'][label]
        assert 'error' not in mode, label
        head = mode['cuda_graphs']['pts_bbox_head']
        assert head['replays'] > 0, label
        captures.append(head['captures'])
    assert all(b > a for a, b in zip(captures, captures[1:])), captures  # counters run on


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_graphs_captured_keeping_memory_predict_the_same(setup):
    """--ab-graph-keep-memory: the B runs' captures (each new camera rig's) skip
    torch.cuda.graph's synchronisation and cache flush and predict what A predicts."""
    res = _cuda_bench(setup, 'keep', '--warmup', '6', *FAST_GRAPHS,
                      '--graph-stable-outputs', 'img_view_transformer', 'occ_encoder',
                      '--graph-rekey-warmup', '0', '--ab-graph-keep-memory', '--ab-rounds', '1')
    a, b = res['modes']['graph-bf16'], res['modes']['graph-bf16+ab']
    assert 'error' not in a and 'error' not in b and res['ab']['graph_keep_memory']
    _assert_same_predictions(a, b, voxels=0.01)
    # the rig-dependent graphs captured again in B (with the memory kept) and replayed
    for name in ('img_view_transformer', 'occ_encoder'):
        graphs_a, graphs_b = a['cuda_graphs'][name], b['cuda_graphs'][name]
        assert graphs_b['captures'] > graphs_a['captures'], name
        assert graphs_b['replays'] > graphs_a['replays'], name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_fixed_rig_inputs_serve_every_rig_with_one_graph(setup):
    """--ab-fixed-rig-inputs: with the rig's ranks and query plan as inputs at fixed
    addresses (B) the rig-dependent graphs capture at the switch (and once more if a rig
    needs a longer plan), not at every new rig as in A, and predict what A predicts. Float32
    graphs: the padded plan changes the attention's matmul shapes, whose bf16 rounding flips
    1 % of the random weights' voxels (H200, 2026-12-04); a stale rig would flip far more."""
    res = _cuda_bench(setup, 'rigs', '--warmup', '6', *FAST_GRAPHS,
                      '--graph-stable-outputs', 'img_view_transformer', 'occ_encoder',
                      '--graph-rekey-warmup', '0', '--ab-fixed-rig-inputs', '--ab-rounds', '1',
                      modes=('graph', ))
    a, b = res['modes']['graph'], res['modes']['graph+ab']
    assert 'error' not in a and 'error' not in b and res['ab']['fixed_rig_inputs']
    _assert_same_predictions(a, b, voxels=0.001)
    for name in ('img_view_transformer', 'occ_encoder'):
        a_caps = a['cuda_graphs'][name]['captures']
        b_caps = b['cuda_graphs'][name]['captures'] - a_caps  # the counters run on
        # A: a capture per rig (2 on the H200, 2026-12-04); B: one, at the switch
        assert b_caps <= 2 and b_caps < a_caps, (name, a_caps, b_caps)
        assert b['cuda_graphs'][name]['replays'] > a['cuda_graphs'][name]['replays'], name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_stable_outputs_predict_the_same_with_fewer_captures(setup):
    """--ab-stable-outputs: the rig-dependent graphs returning stable outputs (B) predict
    what the same graphs without them (A) predict; the graphs downstream of them capture no
    more often."""
    res = _cuda_bench(setup, 'stable', '--warmup', '6', *FAST_GRAPHS,
                      '--ab-stable-outputs', 'img_view_transformer', 'occ_encoder',
                      '--ab-rounds', '1')
    a, b = res['modes']['graph-bf16'], res['modes']['graph-bf16+ab']
    assert 'error' not in a and 'error' not in b
    # the same kernels, replayed instead of run eagerly at the rig changes: equal up to
    # float rounding (a stale buffer would feed one frame's features to the next)
    _assert_same_predictions(a, b, voxels=0.01)
    for name in ('volume_encoder_backbone', 'pts_bbox_head', 'panoptic_merge'):
        a_caps = a['cuda_graphs'][name]['captures']
        b_caps = b['cuda_graphs'][name]['captures'] - a_caps  # the counters run on
        assert b_caps <= a_caps, name


def test_occstq_guard():
    from trackocc.analysis.held_out_scoring import occstq_guard

    def scores(ref, strict):
        return dict(occstq=dict(reference=dict(OccSTQ=ref), strict=dict(OccSTQ=strict)))

    guard = occstq_guard({'fp32': scores(0.25, 0.2), 'graph-bf16': scores(0.2505, 0.2),
                          'bf16': scores(0.252, 0.2), 'fp16': dict(error='x'),
                          'compile': scores(float('nan'), 0.2)})
    assert guard['reference_mode'] == 'fp32' and set(guard['modes']) == {
        'graph-bf16', 'bf16', 'fp16', 'compile'}
    assert guard['modes']['graph-bf16']['pass']
    assert guard['modes']['graph-bf16']['abs_diff_points_reference'] == pytest.approx(0.05)
    assert not guard['modes']['bf16']['pass']  # 0.2 points apart
    assert not guard['modes']['fp16']['pass'] and not guard['modes']['compile']['pass']


def test_bad_data_root_names_the_path(tmp_path, capsys):
    bench = load_module('tools/analysis_tools/benchmark.py', 'benchmark_bad_root')
    missing = str(tmp_path / 'no_such_root')
    with pytest.raises(SystemExit) as exc:
        bench.main([TINY, '--data-root', missing, '--device', 'cpu'])
    assert missing in str(exc.value.code) and 'is not a directory' in str(exc.value.code)
    empty = tmp_path / 'empty_root'  # a folder without the annotation files
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        bench.main([TINY, '--data-root', str(empty), '--device', 'cpu'])
    assert str(empty) in str(exc.value.code), exc.value.code
