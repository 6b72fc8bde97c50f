"""tools/analysis_tools/benchmark.py --query-budget on the tiny config on CPU: the head runs on
the budget's rows every frame, the budget is recorded, and budgets that cannot hold a frame's
queries (or a graphed head without a budget) are refused before any timing."""
import json
import os.path as osp

import pytest

from trackocc.models.heads import TrackOccHead

from repo_files import load_module

ROOT = osp.join(osp.dirname(__file__), '..', '..')
TINY = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


@pytest.fixture(scope='module')
def bench():
    return load_module(osp.join('tools', 'analysis_tools', 'benchmark.py'), 'benchmark')


def test_query_budget_is_used_and_recorded(bench, tmp_path, monkeypatch):
    rows = []
    forward = TrackOccHead.forward

    def recording(self, thing_query, *args, **kwargs):
        rows.append(thing_query.shape[1])
        return forward(self, thing_query, *args, **kwargs)

    monkeypatch.setattr(TrackOccHead, 'forward', recording)
    out = tmp_path / 'budget.json'
    # 20 fresh queries + at most 3 live tracks
    bench.main([TINY, '--frames', '1', '--warmup', '1', '--max-live-tracks', '3',
                '--query-budget', '23', '--device', 'cpu', '--json', str(out)])
    res = json.loads(out.read_text())
    assert res['query_budget'] == 23
    assert res['modes']['fp32']['fps'] > 0 and res['modes']['fp32']['mean_live_tracks'] <= 3
    # the two streamed frames (fresh queries only, then + live tracks) both ran on 23 rows;
    # the inference check of the model transforms calls the head without a budget (tensor mode)
    assert rows[-2:] == [23, 23]


@pytest.mark.parametrize('argv, message', [
    (['--query-budget', '22', '--max-live-tracks', '3'],
     'query-budget 22 is less than the 23 thing queries'),
    (['--query-budget', '30', '--max-live-tracks', '0'], 'needs a --max-live-tracks cap'),
    (['--query-budget', '10'], r'query_budget must be None or an int >= num_thing_queries'),
])
def test_budget_that_cannot_hold_a_frame_is_refused(bench, argv, message):
    with pytest.raises(SystemExit, match=message):
        bench.main([TINY, '--frames', '1', '--warmup', '0', '--device', 'cpu', *argv])


def test_graphed_head_needs_a_budget(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args([TINY, '--mode', 'graph', '--graph-modules', 'occ_encoder',
                          'pts_bbox_head'])
    assert 'pts_bbox_head needs --query-budget' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args([TINY, '--mode', 'graph', '--graph-modules', 'pts_bbox_head',
                          'panoptic_merge'])
    assert 'pts_bbox_head panoptic_merge needs --query-budget' in capsys.readouterr().err
    args = bench.parse_args([TINY, '--mode', 'graph', '--graph-modules', 'pts_bbox_head',
                             '--query-budget', '64'])
    assert args.query_budget == 64
