"""tools/analysis_tools/track_diagnostics.py: gt as prediction on a tiny synthetic sequence is
perfect; bad or empty input gives a clear error naming the file."""
import json
import os
import os.path as osp

import pytest


from occ_toy_frames import gt_as_predictions
from repo_files import load_module

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'analysis_tools', 'track_diagnostics.py')


def load_tool():
    return load_module(SCRIPT, 'track_diagnostics_tool_t')


TOOL = load_tool()


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    """One generated validation sequence of 3 frames and its gt written as predictions."""
    root = str(tmp_path_factory.mktemp('synthetic'))
    return root, gt_as_predictions(root)


def test_gt_as_prediction_is_perfect(synthetic, tmp_path, capsys):
    root, pred = synthetic
    out = tmp_path / 'diag.json'
    # a data root is accepted for GT_ROOT (its pano_voxel04/ is used)
    assert TOOL.main([pred, root, '--split', 'val', '--strict', '--json', str(out)]) == 0
    table = capsys.readouterr().out
    assert 'OccSTQ 100.00  AQ 100.00  mIoU 100.00' in table
    rep = json.loads(out.read_text())
    assert not list(tmp_path.glob('*.tmp-*'))
    overall = rep['overall']
    assert rep['num_frames'] == 3 and overall['gt_tubes'] > 5
    assert overall['pred_tracks'] == overall['gt_tubes'] == overall['matched_tubes']
    assert overall['mostly_tracked'] == overall['gt_tubes']
    for key in ('missed_tubes', 'mostly_lost', 'id_switches', 'fragmentations',
                'false_positive_tracks'):
        assert overall[key] == 0, key
    assert overall['coverage_mean'] == 1.0 and overall['aq'] == pytest.approx(1.0)
    assert overall['instance_recall'] == 1.0 and overall['instance_precision'] == 1.0
    assert overall['track_lifetime_mean'] == overall['tube_lifetime_mean']
    seq = rep['sequences'][0]
    assert seq['per_frame']['births'] == seq['per_frame']['gt_births']
    assert seq['per_frame']['deaths'] == seq['per_frame']['gt_deaths']
    assert {t['id'] for t in seq['tubes']} == {t['id'] for t in seq['tracks']}
    assert {'vehicle', 'pedestrian'} <= set(rep['per_class'])


def test_reference_settings_count_unzeroed_sign_tracks(synthetic, capsys):
    """The reference evaluator leaves predicted sign ids in place: with gt as prediction they
    are tracks without a tube (false positives); every tube is still perfect."""
    root, pred = synthetic
    assert TOOL.main([pred, osp.join(root, 'pano_voxel04'), '--quiet']) == 0
    out = osp.join(root, 'ref.json')
    assert TOOL.main([pred, root, '--quiet', '--json', out]) == 0
    rep = json.loads(open(out).read())
    assert rep['per_class']['sign']['gt_tubes'] == 0
    assert rep['per_class']['sign']['false_positive_tracks'] == \
        rep['per_class']['sign']['pred_tracks'] > 0
    assert rep['overall']['aq'] == pytest.approx(1.0) and rep['overall']['id_switches'] == 0


def expect_error(capsys, argv, *fragments):
    assert TOOL.main(argv) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_inputs(synthetic, tmp_path, capsys):
    root, pred = synthetic
    gt = osp.join(root, 'pano_voxel04')
    expect_error(capsys, [str(tmp_path / 'nope'), gt], 'nope', 'prediction directory not found')
    empty = tmp_path / 'empty'
    empty.mkdir()
    expect_error(capsys, [str(empty), gt], '3 ground-truth frames have no prediction')
    (tmp_path / 'gt_empty' / 'validation').mkdir(parents=True)
    expect_error(capsys, [str(empty), str(tmp_path / 'gt_empty')], 'nothing to score')
    expect_error(capsys, [pred, str(tmp_path)], 'ground-truth split directory not found')
    # a prediction of a frame the gt does not have, and a corrupt prediction
    other = tmp_path / 'other'
    other.mkdir()
    for name in os.listdir(pred):
        os.link(osp.join(pred, name), other / name)
    (other / '1000007.npz').write_bytes(open(osp.join(pred, '1000000.npz'), 'rb').read())
    expect_error(capsys, [str(other), gt], '1000007.npz', 'without a ground-truth frame')
    os.remove(other / '1000007.npz')
    os.remove(other / '1000001.npz')
    (other / '1000001.npz').write_bytes(b'not a zip')
    expect_error(capsys, [str(other), gt], '1000001.npz', 'unreadable npz')
    expect_error(capsys, [pred, gt, '--json', str(tmp_path)], '--json', 'is a folder')
    expect_error(capsys, [pred, gt, '--iou-thr', '1.2'], 'iou_thr')
