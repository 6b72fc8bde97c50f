"""tools/analysis_tools/host_ops.py and HostOpCounter on the CPU (tiny config, random
weights): the ops a frame dispatches outside its stage modules, by source line; fixed track
rows move the tracking's glue into track_carry / track_settle."""
import json
import os.path as osp

import pytest
import torch

from repo_files import load_module
from trackocc.analysis.host_ops import HostOpCounter

ROOT = osp.join(osp.dirname(__file__), '..', '..')
TINY = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


@pytest.fixture(scope='module')
def tool():
    return load_module('tools/analysis_tools/host_ops.py', 'host_ops_tool')


def test_fixed_track_rows_leave_few_ops_outside_the_stage_modules(tool, tmp_path):
    out = tmp_path / 'rows.json'
    default = tool.main([TINY, '--query-budget', '84', '--top', '5'])
    rows = tool.main([TINY, '--query-budget', '84', '--fixed-track-rows', '--fixed-rig-inputs',
                      '--json', str(out)])
    assert json.loads(out.read_text()) == rows
    for res in (default, rows):
        assert res['outside'] > 0 and res['inside'] > res['outside']
        assert sum(res['ops'].values()) <= res['outside']
        assert all(line.startswith('trackocc/') for line in res['lines'])  # attributed
        assert res['live_tracks'] > 0  # the counted frame carried tracks
    assert len(default['lines']) == 5 and rows['fixed_track_rows'] and rows['fixed_rig_inputs']
    # the tracker's update, the alignment and the merge's decision moved inside the graphable
    # track_carry / track_settle: a handful of ops stays outside
    assert rows['outside'] * 3 < default['outside'], (rows['outside'], default['outside'])
    assert not any('runtime_tracker' in line or ('ego_motion.py' in line and 'align' in line)
                   for line in rows['lines'])


def test_counter_hooks_come_off_and_a_model_without_stages_is_refused():
    from trackocc.analysis.model_setup import build_model, load_config
    model = build_model(load_config(TINY), None, 'cpu').eval()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    image = torch.zeros(1, 3, 64, 64)
    with HostOpCounter(model, where=False) as counter:
        model.img_backbone(image)  # inside a stage module
        image + 1  # outside
    assert counter.outside == 1 and not counter.by_line  # where=False: no attribution
    with HostOpCounter(model, where=False) as counter:
        model.img_backbone(image)
    assert counter.inside > 0 and counter.outside == 0
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
               for m in model.modules()) == hooks
    with pytest.raises(ValueError, match='HostOpCounter: Linear has none of the stage modules'):
        HostOpCounter(torch.nn.Linear(2, 2))


@pytest.mark.parametrize('options, match', [
    (['--fixed-track-rows'], '--fixed-track-rows needs --query-budget'),
    (['--frames', '0'], '--frames must be >= 1'),
])
def test_bad_options_are_refused(tool, options, match, capsys):
    with pytest.raises(SystemExit):
        tool.parse_args([TINY] + options)
    assert match in capsys.readouterr().err


def test_budget_too_small_for_the_cap_is_refused(tool):
    with pytest.raises(SystemExit, match='less than the 84 thing queries'):
        tool.main([TINY, '--query-budget', '60'])
