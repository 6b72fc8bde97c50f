"""tools/evaluate_predictions.py: bad input gives a clear error naming the file; options."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from repo_files import load_module

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'evaluate_predictions.py')
CASE = osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_01')
GRID = (200, 200, 16)


def load_tool():
    return load_module(SCRIPT, 'evaluate_predictions_tool_c')


TOOL = load_tool()


def write_gt(root, seq, frame, with_car=True):
    sem = np.full(GRID, 15, np.uint8)
    sem[:, :, 0] = 13
    inst = np.zeros(GRID, np.int32)
    if with_car:
        sem[10:14, 10:12, 1:3], inst[10:14, 10:12, 1:3] = 1, 7
    folder = osp.join(root, 'validation', f'{seq:03d}')
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f'{frame:03d}_04.npz')
    np.savez_compressed(path, semantics=sem, instances=inst,
                        mask_camera=np.ones(GRID, np.uint8), infov=np.ones(GRID, bool))
    return sem, inst


def write_pred(folder, name, sem, inst):
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, name)
    np.savez_compressed(path, pano_sem=sem.reshape(-1), pano_inst=inst.reshape(-1))
    return path


@pytest.fixture
def tree(tmp_path):
    """gt: seq 5 frames 0..2; predictions = gt for all three frames."""
    gt, pred = str(tmp_path / 'gt'), str(tmp_path / 'pred')
    for f in range(3):
        sem, inst = write_gt(gt, 5, f)
        write_pred(pred, f'{1_005_000 + f}.npz', sem, inst.astype(np.int16))
    return gt, pred


def run(gt, pred, *extra):
    return TOOL.main(['--gt-root', gt, '--pred-dir', pred, '--quiet', *extra])


def expect_error(capsys, gt, pred, *fragments, extra=()):
    assert run(gt, pred, *extra) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_good_tree_scores(tree, tmp_path):
    out = tmp_path / 'r.json'
    assert run(*tree, '--json', str(out)) == 0
    res = json.loads(out.read_text())
    assert res['AQ'] == 1.0 and res['num_frames'] == 3 and res['num_sequences'] == 1


def test_prediction_without_gt(tree, capsys):
    gt, pred = tree
    sem, inst = np.zeros(GRID, np.uint8), np.zeros(GRID, np.int16)
    path = write_pred(pred, '1005009.npz', sem, inst)
    expect_error(capsys, gt, pred, 'without a ground-truth frame', path)


def test_gt_without_prediction_error_or_empty(tree, capsys, tmp_path):
    gt, pred = tree
    os.remove(osp.join(pred, '1005002.npz'))
    expect_error(capsys, gt, pred, '1 ground-truth frames have no prediction',
                 osp.join(pred, '1005002.npz'), '--missing-pred empty')
    out = tmp_path / 'r.json'
    assert run(gt, pred, '--missing-pred', 'empty', '--json', str(out)) == 0
    res = json.loads(out.read_text())
    assert res['num_frames'] == 3 and 0 < res['AQ'] < 1  # the empty frame misses the car
    assert run(gt, pred, '--missing-pred', 'skip', '--json', str(out)) == 0
    res = json.loads(out.read_text())
    assert res['num_frames'] == 2 and res['AQ'] == 1.0
    # frames skipped by --load-interval need no prediction
    assert run(gt, pred, '--load-interval', '2') == 2  # frame 2 is kept by interval 2
    os.rename(osp.join(pred, '1005001.npz'), osp.join(pred, '1005002.npz'))
    assert run(gt, pred, '--load-interval', '2') == 0


def test_nothing_to_score_is_an_error(tree, capsys, tmp_path):
    gt, _ = tree
    empty = tmp_path / 'empty'
    empty.mkdir()
    out = tmp_path / 'r.json'
    expect_error(capsys, gt, str(empty), 'nothing to score', str(empty),
                 '--missing-pred skip leaves out all 3 ground-truth frames',
                 extra=('--missing-pred', 'skip', '--json', str(out)))
    assert not out.exists()
    no_gt = tmp_path / 'gt0'
    (no_gt / 'validation').mkdir(parents=True)
    expect_error(capsys, str(no_gt), str(empty), 'nothing to score',
                 'holds no ground-truth frame')


def test_output_paths_are_checked_before_scoring_and_written_atomically(tree, capsys,
                                                                        tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('x')
    expect_error(capsys, *tree, f'{blocker} is a file, not a folder',
                 extra=('--json', str(blocker / 'sub' / 'r.json')))
    # checked first: the bad path is reported before the (here missing) trees are read
    err = expect_error(capsys, str(tmp_path / 'no_gt'), tree[1], 'is a file, not a folder',
                       extra=('--json', str(blocker / 'r.json')))
    assert 'not found' not in err
    expect_error(capsys, *tree, 'is a folder, expected a file path',
                 extra=('--csv', str(tmp_path)))
    out_dir = tmp_path / 'new' / 'dir'
    assert run(*tree, '--json', str(out_dir / 'r.json'), '--csv', str(out_dir / 's.csv')) == 0
    assert sorted(os.listdir(out_dir)) == ['r.json', 's.csv']  # no temporary file left
    assert json.loads((out_dir / 'r.json').read_text())['num_frames'] == 3
    assert (out_dir / 's.csv').read_text().splitlines()[1].startswith('5,3,')  # seq 5, 3 frames


def test_wrong_shape_and_dtype(tree, capsys):
    gt, pred = tree
    path = write_pred(pred, '1005000.npz', np.zeros(1000, np.uint8), np.zeros(1000, np.int16))
    expect_error(capsys, gt, pred, path, 'pano_sem has shape (1000,)')
    path = write_pred(pred, '1005000.npz', np.zeros(GRID, np.uint8), np.zeros(GRID, np.int32))
    expect_error(capsys, gt, pred, path, 'pano_inst has dtype int32, expected int16')
    path = write_pred(pred, '1005000.npz', np.full(GRID, 40, np.uint8), np.zeros(GRID, np.int16))
    expect_error(capsys, gt, pred, path, 'class ids outside [0, 16)')


def test_bad_gt_file(tree, capsys):
    gt, pred = tree
    path = osp.join(gt, 'validation', '005', '001_04.npz')
    np.savez_compressed(path, semantics=np.zeros((200, 200), np.uint8))
    expect_error(capsys, gt, pred, path, 'missing arrays')


def test_unreadable_npz(tree, capsys):
    gt, pred = tree
    path = osp.join(pred, '1005001.npz')
    with open(path, 'wb') as f:
        f.write(b'not a zip file')
    expect_error(capsys, gt, pred, path, 'unreadable npz')


def test_duplicate_sample_idx_and_bad_names(tree, capsys):
    gt, pred = tree
    sem, inst = write_gt(gt, 5, 0)
    write_pred(pred, '01005000.npz', sem, inst.astype(np.int16))
    expect_error(capsys, gt, pred, 'duplicate sample_idx 1005000')
    os.remove(osp.join(pred, '01005000.npz'))
    path = write_pred(pred, 'frame_a.npz', sem, inst.astype(np.int16))
    expect_error(capsys, gt, pred, path, '<sample_idx>.npz')
    os.remove(path)
    path = write_pred(pred, '5000.npz', sem, inst.astype(np.int16))  # a training sample_idx
    expect_error(capsys, gt, pred, path, "not of split 'validation'")


def test_missing_directories(tmp_path, capsys):
    expect_error(capsys, str(tmp_path / 'nope'), str(tmp_path), 'split directory not found')
    expect_error(capsys, str(tmp_path), str(tmp_path / 'nope'), 'prediction directory not found')


def test_gt_vs_gt_strict_scores_one(tmp_path):
    pred = str(tmp_path / 'pred')
    gt_root = osp.join(CASE, 'gt')
    for seq in os.listdir(osp.join(gt_root, 'validation')):
        for name in os.listdir(osp.join(gt_root, 'validation', seq)):
            with np.load(osp.join(gt_root, 'validation', seq, name)) as g:
                write_pred(pred, f'{1_000_000 + int(seq) * 1000 + int(name[:3])}.npz',
                           g['semantics'], g['instances'].astype(np.int16))
    out = tmp_path / 'r.json'
    assert run(gt_root, pred, '--strict', '--json', str(out)) == 0
    res = json.loads(out.read_text())
    assert res['OccSTQ'] == 1.0 and res['AQ'] == 1.0 and res['mIoU'] == 1.0
    assert run(gt_root, pred, '--json', str(out)) == 0
    assert json.loads(out.read_text())['mIoU'] < 1.0  # reference: absent classes count as 0


def test_script_runs_without_torch_or_mmengine():
    code = ('import runpy, sys; sys.argv = ["evaluate_predictions.py", "--gt-root", '
            f'{osp.join(CASE, "gt")!r}, "--pred-dir", {osp.join(CASE, "pred")!r}, "--quiet"]\n'
            'try:\n    runpy.run_path(' + repr(SCRIPT) + ', run_name="__main__")\n'
            'except SystemExit as e:\n    assert e.code == 0, e.code\n'
            'heavy = [m for m in ("torch", "mmengine", "mmdet3d", "trackocc.registry",\n'
            '                      "trackocc.evaluation.metrics") if m in sys.modules]\n'
            'assert not heavy, heavy\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
