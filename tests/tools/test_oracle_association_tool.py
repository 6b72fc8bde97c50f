"""tools/analysis_tools/oracle_association.py: gt masks with new ids in every frame lose AQ,
the oracle ids give it back; bad output folders are refused."""
import glob
import json
import os.path as osp

import numpy as np
import pytest

from trackocc.evaluation.functional import load_pred_frame

from occ_toy_frames import gt_as_predictions
from repo_files import load_module

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = load_module(osp.join(REPO, 'tools', 'analysis_tools', 'oracle_association.py'),
                   'oracle_association_tool_t')


def renumbered(instances, frame):
    """Every frame numbers its instances afresh: each object switches id at every frame."""
    ids, inverse = np.unique(instances, return_inverse=True)
    fresh = np.where(ids == 0, 0, np.arange(len(ids)) + 2 + 100 * frame)[inverse]
    return fresh.reshape(instances.shape)


@pytest.fixture(scope='module')
def switched(tmp_path_factory):
    """One generated validation sequence of 3 frames; its gt as prediction, renumbered."""
    root = str(tmp_path_factory.mktemp('synthetic'))
    return root, gt_as_predictions(root, renumbered)


def test_oracle_ids_undo_the_switches(switched, tmp_path, capsys):
    root, pred = switched
    out_dir, report = tmp_path / 'oracle', tmp_path / 'oracle.json'
    assert TOOL.main([pred, root, str(out_dir), '--split', 'val', '--strict',
                      '--json', str(report)]) == 0
    assert 'oracle_ids' in capsys.readouterr().out
    rep = json.loads(report.read_text())
    assert rep['frames'] == 3
    assert rep['predicted_ids']['AQ'] < 0.9  # a tube of 2 or 3 frames is 2 or 3 tracks
    assert rep['oracle_ids']['AQ'] == pytest.approx(1.0)
    assert rep['oracle_ids']['mIoU'] == rep['predicted_ids']['mIoU'] == pytest.approx(1.0)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        osp.basename(p) for p in glob.glob(osp.join(pred, '*.npz')))
    sem, inst = load_pred_frame(str(next(out_dir.iterdir())))
    assert inst.dtype == np.int16 and (inst >= 0).all()
    voxel_report = tmp_path / 'voxel.json'
    assert TOOL.main([pred, root, str(tmp_path / 'voxel'), '--per-voxel', '--strict',
                      '--json', str(voxel_report)]) == 0
    rep = json.loads(voxel_report.read_text())
    assert rep['per_voxel'] and rep['oracle_ids']['AQ'] == pytest.approx(1.0)


def test_refuses_bad_output_folders(switched, tmp_path, capsys):
    root, pred = switched
    assert TOOL.main([pred, root, pred]) == 2
    assert 'must not be PRED_DIR' in capsys.readouterr().err
    busy = tmp_path / 'busy'
    busy.mkdir()
    (busy / 'x.npz').write_bytes(b'')
    assert TOOL.main([pred, root, str(busy)]) == 2
    assert 'not empty' in capsys.readouterr().err
    assert TOOL.main([str(tmp_path / 'nothing'), root, str(tmp_path / 'o2')]) == 2
    assert 'not found' in capsys.readouterr().err
    assert not (tmp_path / 'o2').exists()  # checked before anything is written
