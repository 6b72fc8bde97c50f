"""tools/visualize_occupancy.py on a tiny gt + prediction set in the release layout."""
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from trackocc.structures import write_pred_frame

from repo_files import load_module

TOOL = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'visualize_occupancy.py')


@pytest.fixture(scope='module')
def tool():
    return load_module(TOOL, 'visualize_occupancy_tool')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Validation sequence 3 with 3 gt frames; predictions for frames 0 and 2 only."""
    root = tmp_path_factory.mktemp('vis-tool')
    seq_dir = root / 'data' / 'pano_voxel04' / 'validation' / '003'
    seq_dir.mkdir(parents=True)
    pred_dir = root / 'preds'
    for frame in range(3):
        sem = np.full((200, 200, 16), 15, np.uint8)
        sem[:, :, 0] = 13
        inst = np.zeros(sem.shape, np.int32)
        sem[120 + frame:130 + frame, 90:95, 1:4], inst[120 + frame:130 + frame, 90:95, 1:4] = 1, 6
        sem[60:62, 60:62, 1:8], inst[60:62, 60:62, 1:8] = 3, 9  # a sign: id zeroed by default
        mask = np.ones(sem.shape, np.uint8)
        np.savez_compressed(seq_dir / f'{frame:03d}_04.npz', semantics=sem, instances=inst,
                            mask_camera=mask, mask_lidar=mask, infov=mask.astype(bool))
        if frame != 1:
            write_pred_frame(str(pred_dir / f'{1_003_000 + frame}.npz'), sem, inst * 2)
    return root


def test_gt_and_predictions_to_pngs_and_gif(tool, data, tmp_path):
    out = tmp_path / 'vis'
    assert tool.main(['--data-root', str(data / 'data'), '--pred-dir', str(data / 'preds'),
                      '--out-dir', str(out), '--no-3d']) == 0
    assert sorted(os.listdir(out)) == ['003', 'validation_003.gif']
    assert sorted(os.listdir(out / '003')) == ['000.png', '002.png']  # frame 1 has no pred
    with Image.open(out / 'validation_003.gif') as gif:
        assert gif.n_frames == 2


def test_ground_truth_only_and_predictions_only(tool, data, tmp_path):
    gt_out, pred_out = tmp_path / 'gt', tmp_path / 'pred'
    assert tool.main(['--gt-root', str(data / 'data' / 'pano_voxel04'), '--sequences', '3',
                      '--out-dir', str(gt_out), '--no-3d', '--no-gif']) == 0
    assert sorted(os.listdir(gt_out / '003')) == ['000.png', '001.png', '002.png']
    assert not (gt_out / 'validation_003.gif').exists()
    gt_png = np.asarray(Image.open(gt_out / '003' / '000.png'))
    assert tool.main(['--pred-dir', str(data / 'preds'), '--no-gt', '--out-dir',
                      str(pred_out), '--no-3d', '--max-frames', '1']) == 0
    assert sorted(os.listdir(pred_out / '003')) == ['000.png']
    assert np.asarray(Image.open(pred_out / '003' / '000.png')).shape == gt_png.shape


def test_errors(tool, data, tmp_path, capsys):
    assert tool.main(['--data-root', str(data / 'data'), '--sequences', '7',
                      '--out-dir', str(tmp_path)]) == 2
    assert 'sequences [7]' in capsys.readouterr().err
    assert tool.main(['--out-dir', str(tmp_path)]) == 2
    assert tool.main(['--data-root', str(tmp_path / 'nowhere'), '--out-dir',
                      str(tmp_path)]) == 2
    assert 'not found' in capsys.readouterr().err


def test_empty_prediction_folder_is_an_error(tool, data, tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    out = tmp_path / 'vis'
    assert tool.main(['--data-root', str(data / 'data'), '--pred-dir', str(empty),
                      '--out-dir', str(out), '--no-3d']) == 2
    err = capsys.readouterr().err
    assert f'{empty} holds no prediction' in err and 'nothing to render' in err
    assert tool.main(['--pred-dir', str(empty), '--no-gt', '--out-dir', str(out)]) == 2
    assert not out.exists()
