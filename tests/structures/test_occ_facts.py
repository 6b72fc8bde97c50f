"""trackocc.structures: the shared facts (sample index, grid geometry, class table) and the one
occupancy npz reader."""
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from trackocc.structures import (BOX_LABEL_TO_OCC, CAMERA_FOLDERS, CAMERA_NAMES, FREE_CLASS,
                                 GRID_SHAPE, OCC_CLASS_NAMES, STUFF_CLASSES, THING_CLASSES,
                                 OccFileError, check_gt_arrays, find_occ_files, load_gt_frame,
                                 load_pred_frame, make_sample_idx, occ_file_path,
                                 read_occ_npz, split_sample_idx, voxel_axes, voxel_centres,
                                 write_pred_frame)


def test_sample_index_round_trip_and_sequence_id():
    idx = make_sample_idx(1, 23, 456)
    assert idx == 1_023_456
    decoded = split_sample_idx(idx)
    assert decoded == (1, 23, 456) and decoded.sequence_id == 1023
    split, seq, frame = split_sample_idx(np.int64(17))
    assert (split, seq, frame) == (0, 0, 17)
    with pytest.raises(ValueError, match='seq=1000'):
        make_sample_idx(0, 1000, 0)


def test_class_table_and_cameras():
    assert len(OCC_CLASS_NAMES) == 16 and OCC_CLASS_NAMES[FREE_CLASS] == 'free'
    assert THING_CLASSES == (1, 2, 4) and not set(STUFF_CLASSES) & set(THING_CLASSES)
    assert FREE_CLASS not in STUFF_CLASSES and len(STUFF_CLASSES) == 12
    assert BOX_LABEL_TO_OCC == {0: 1, 1: 2, 2: 4, 3: 3}
    assert CAMERA_FOLDERS[CAMERA_NAMES[3]] == 'image_3'


def test_voxel_centres_match_the_axes():
    axes = voxel_axes()
    assert [len(a) for a in axes] == list(GRID_SHAPE)
    assert axes[0][0] == -39.8 and axes[2][0] == pytest.approx(-0.8)
    ijk = np.array([[0, 199, 15], [100, 3, 2]])
    centres = voxel_centres(ijk)
    for a in range(3):
        np.testing.assert_array_equal(centres[:, a], axes[a][ijk[:, a]])
    with pytest.raises(ValueError, match=r'\(K, 3\)'):
        voxel_centres(np.zeros((4, 2), int))
    # one voxel size per axis (e.g. a coarser z)
    x, y, z = voxel_axes((4, 2, 3), (-8.0, 0.0, -1.0), (4.0, 1.0, 1.6))
    np.testing.assert_allclose(x, [-6.0, -2.0, 2.0, 6.0])
    np.testing.assert_allclose(y, [0.5, 1.5])
    np.testing.assert_allclose(z, [-0.2, 1.4, 3.0])


def _gt(shape=(4, 5, 3)):
    rng = np.random.default_rng(0)
    return dict(semantics=rng.integers(0, 16, shape).astype(np.uint8),
                instances=rng.integers(0, 9, shape).astype(np.int16),
                mask_camera=rng.random(shape) > 0.5, mask_lidar=rng.random(shape) > 0.5,
                infov=np.ones(shape, np.uint8))


def test_reader_reads_paths_and_bytes_and_names_the_file(tmp_path):
    path = occ_file_path(str(tmp_path), 1, 3, 20)
    assert path == os.path.join(str(tmp_path), 'validation', '003', '020_04.npz')
    os.makedirs(os.path.dirname(path))
    gt = _gt()
    np.savez_compressed(path, **gt)
    open(os.path.join(os.path.dirname(path), 'notes_04.npz'), 'w').close()  # not a frame
    assert find_occ_files(str(tmp_path), 'validation') == {(3, 20): path}
    with pytest.raises(OccFileError, match='training: ground-truth split directory not found'):
        find_occ_files(str(tmp_path), 'training')
    arrays = load_gt_frame(path, grid_shape=(4, 5, 3), num_classes=16, check_crc=True)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], gt[key])
        assert arrays[key].dtype == gt[key].dtype
    with open(path, 'rb') as f:
        content = f.read()
    from_bytes = read_occ_npz(content, path='x.npz')
    np.testing.assert_array_equal(from_bytes['mask_lidar'], gt['mask_lidar'])
    with pytest.raises(OccFileError, match=r'020_04.npz: missing arrays \[.infov.\]'):
        np.savez(path, **{k: v for k, v in gt.items() if k != 'infov'})
        read_occ_npz(path)
    with pytest.raises(OccFileError, match='020_04.npz: unreadable npz'):
        with open(path, 'wb') as f:
            f.write(content[:len(content) // 2])
        read_occ_npz(path)
    with pytest.raises(OccFileError, match='nothing.npz: file not found'):
        read_occ_npz(str(tmp_path / 'nothing.npz'))


def test_reader_checks_the_crc_when_asked(tmp_path):
    path = str(tmp_path / 'stored.npz')
    gt = _gt()
    np.savez(path, **gt)  # stored, not deflated: a flipped byte still has the right length
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo('semantics.npy')
    with open(path, 'r+b') as f:
        f.seek(info.header_offset + 30 + len('semantics.npy') + 200)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    read_occ_npz(path, check_crc=False)
    with pytest.raises(OccFileError, match='semantics.npy fails its CRC check'):
        read_occ_npz(path, check_crc=True)


def test_gt_checks():
    gt = _gt()
    check_gt_arrays('f.npz', gt, (4, 5, 3))
    with pytest.raises(OccFileError, match=r'f.npz: semantics has class ids outside \[0, 16\)'):
        check_gt_arrays('f.npz', dict(gt, semantics=gt['semantics'] + 16), (4, 5, 3))
    check_gt_arrays('f.npz', dict(gt, semantics=gt['semantics'] + 16), (4, 5, 3),
                    num_classes=None)  # the evaluator's check: shapes and dtypes only
    with pytest.raises(OccFileError, match='mask_camera has dtype float64'):
        check_gt_arrays('f.npz', dict(gt, mask_camera=np.zeros((4, 5, 3))), (4, 5, 3),
                        num_classes=None)
    with pytest.raises(OccFileError, match=r'infov has shape \(4, 5\), expected \(4, 5, 3\)'):
        check_gt_arrays('f.npz', dict(gt, infov=np.ones((4, 5), bool)), (4, 5, 3))


def test_prediction_round_trip_is_atomic(tmp_path):
    path = str(tmp_path / 'preds' / '1000007.npz')
    sem = np.arange(60).reshape(4, 5, 3) % 16
    inst = np.arange(60).reshape(4, 5, 3) - 3
    write_pred_frame(path, sem, inst)
    assert os.listdir(os.path.dirname(path)) == ['1000007.npz']
    got_sem, got_inst = load_pred_frame(path, grid_shape=(4, 5, 3))
    assert got_sem.dtype == np.uint8 and got_inst.dtype == np.int16
    np.testing.assert_array_equal(got_sem, sem.reshape(-1))
    np.testing.assert_array_equal(got_inst, inst.reshape(-1))
    with pytest.raises(ValueError, match='do not fit uint8'):
        write_pred_frame(path, sem + 300, inst)
    with pytest.raises(OccFileError, match=r'pano_sem has shape \(60,\), expected \(61,\)'):
        load_pred_frame(path, grid_shape=(61,))


def test_fact_modules_import_numpy_only():
    code = ('import sys, trackocc.structures\n'
            'heavy = [m for m in ("torch", "mmengine", "mmdet3d", "cv2") if m in sys.modules]\n'
            'assert not heavy, heavy\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
