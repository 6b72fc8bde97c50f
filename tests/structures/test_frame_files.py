"""Finding ground-truth and prediction files of sequences (trackocc.structures.occ_npz)."""
import pytest

from trackocc.structures import (OccFileError, find_pred_files, make_sample_idx,
                                 occ_file_path, sequence_frame_files)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')
    return str(path)


@pytest.fixture
def tree(tmp_path):
    gt = tmp_path / 'pano_voxel04'
    for frame in range(4):
        _touch(tmp_path / occ_file_path('pano_voxel04', 'validation', 1, frame))
    preds = tmp_path / 'preds'
    for seq, frame in [(1, 0), (1, 1), (1, 9), (2, 0)]:
        _touch(preds / f'{make_sample_idx(1, seq, frame)}.npz')
    _touch(preds / f'{make_sample_idx(0, 1, 0)}.npz')  # training split: not listed
    return str(gt), str(preds)


def test_gt_and_predictions_are_paired_per_frame(tree):
    gt, preds = tree
    frames = sequence_frame_files('validation', gt_root=gt, pred_dir=preds)
    assert list(frames) == [1] and list(frames[1]) == [0, 1, 2, 3]
    assert frames[1][0]['pred'].endswith('1001000.npz') and frames[1][2]['pred'] is None
    both = sequence_frame_files('validation', gt_root=gt, pred_dir=preds, pred_without_gt=True)
    assert list(both) == [1, 2] and list(both[1]) == [0, 1, 2, 3, 9]
    assert both[2][0]['gt'] is None
    only_pred = sequence_frame_files('validation', pred_dir=preds)
    assert {s: list(f) for s, f in only_pred.items()} == {1: [0, 1, 9], 2: [0]}


def test_selection_by_sequence_interval_and_count(tree):
    gt, preds = tree
    frames = sequence_frame_files('validation', gt_root=gt, sequences=[1], load_interval=2,
                                  max_frames=1)
    assert {s: list(f) for s, f in frames.items()} == {1: [0]}
    with pytest.raises(OccFileError, match=r'sequences \[5\]'):
        sequence_frame_files('validation', gt_root=gt, sequences=[5])


def test_bad_prediction_names_and_folders_are_errors(tree, tmp_path):
    _, preds = tree
    assert len(find_pred_files(preds)) == 5
    _touch(tmp_path / 'preds' / 'frame_0.npz')
    with pytest.raises(OccFileError, match='frame_0.npz: prediction file name'):
        find_pred_files(preds)
    with pytest.raises(OccFileError, match='prediction directory not found'):
        find_pred_files(str(tmp_path / 'nowhere'))
    with pytest.raises(OccFileError, match='ground-truth split directory not found'):
        sequence_frame_files('training', gt_root=str(tmp_path / 'pano_voxel04'))
