"""Data checker: healthy synthetic data passes; each kind of damage is reported by file."""
import os
import pickle
import shutil
import sys

import numpy as np
import pytest

from trackocc.datasets.data_checker import (DataFileError, check_data_root, read_image,
                                            read_info_pkl, read_occ_npz, read_points_bin)
from trackocc.datasets.synthetic import generate_synthetic_dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'tools'))
import create_data  # noqa: E402

NPZ = os.path.join('pano_voxel04', 'training', '000', '001_04.npz')
IMG = os.path.join('kitti_format', 'training', 'image_3', '0000001.jpg')
PKL = os.path.join('kitti_format', 'waymo_infos_train_jpg.pkl')


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('chk') / 'data')
    generate_synthetic_dataset(root, train_seqs=1, val_seqs=1, frames_per_seq=2, seed=5,
                               image_size=(64, 48), progress=False)
    return root


@pytest.fixture
def root(pristine, tmp_path):
    dst = str(tmp_path / 'data')
    shutil.copytree(pristine, dst)
    return dst


def _problems(root, **kw):
    return [str(p) for p in check_data_root(root, **kw).problems]


def _rewrite_npz(path, **changes):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez_compressed(path, **arrays)


def test_healthy_data_passes_and_cli_exits_zero(root, capsys):
    assert _problems(root) == []
    assert create_data.main(['check', '--data-root', root, '--no-progress']) == 0
    assert '0 problems' in capsys.readouterr().out


def test_corrupt_npz_is_named(root):
    path = os.path.join(root, NPZ)
    with open(path, 'r+b') as f:
        f.truncate(100)
    probs = _problems(root)
    assert len(probs) == 1 and probs[0].startswith(path) and 'unreadable npz' in probs[0]
    with pytest.raises(DataFileError, match='001_04.npz'):
        read_occ_npz(path)


def test_missing_image_is_named_and_cli_fails(root, capsys):
    path = os.path.join(root, IMG)
    os.remove(path)
    probs = _problems(root)
    assert probs == [f'{path}: image does not exist']
    assert create_data.main(['check', '--data-root', root, '--no-progress']) == 1
    assert f'PROBLEM {path}: image does not exist' in capsys.readouterr().out


def test_truncated_pkl_and_jpeg(root):
    pkl = os.path.join(root, PKL)
    with open(pkl, 'r+b') as f:
        f.truncate(os.path.getsize(pkl) // 2)
    img = os.path.join(root, IMG)
    with open(img, 'r+b') as f:
        f.truncate(os.path.getsize(img) - 50)
    probs = _problems(root)
    assert any(p.startswith(pkl) and 'cannot unpickle' in p for p in probs)
    with pytest.raises(DataFileError, match='waymo_infos_train_jpg.pkl: cannot unpickle'):
        read_info_pkl(pkl)
    with pytest.raises(DataFileError, match='truncated JPEG'):
        read_image(img)


def test_bad_npz_contents(root):
    path = os.path.join(root, NPZ)
    with np.load(path) as f:
        sem, ins = f['semantics'].copy(), f['instances'].copy()
    sem[0, 0, 0] = 16
    _rewrite_npz(path, semantics=sem)
    assert any('class ids outside [0, 16)' in p for p in _problems(root))
    # one instance id on two classes, and an id on a stuff class
    sem[0, 0, 0] = 1
    ins[0, 0, 0] = 999
    sem[0, 0, 1] = 2
    ins[0, 0, 1] = 999
    sem[0, 0, 2] = 13
    ins[0, 0, 2] = 998
    _rewrite_npz(path, semantics=sem, instances=ins)
    probs = _problems(root)
    assert f'{path}: instance id 999 spans classes [1, 2]' in probs
    assert any(p.startswith(path) and 'instance id 998 on class 13' in p for p in probs)
    _rewrite_npz(path, infov=np.zeros((200, 200, 8), bool))
    assert _problems(root) == [f'{path}: infov has shape (200, 200, 8), expected (200, 200, 16)']


def test_bad_info_fields_and_points(root):
    pkl = os.path.join(root, PKL)
    data = read_info_pkl(pkl)
    data['data_list'][0]['images']['CAM_FRONT'].pop('cam2img')
    data['data_list'][1]['ego2global'] = [[1, 0], [0, 1]]
    # a camera the model cannot invert (its row of depth collapsed): named before training
    l2c = np.asarray(data['data_list'][1]['images']['CAM_SIDE_LEFT']['lidar2cam'], float)
    l2c[2] = 0.0
    data['data_list'][1]['images']['CAM_SIDE_LEFT']['lidar2cam'] = l2c
    with open(pkl, 'wb') as f:
        pickle.dump(data, f)
    probs = _problems(root)
    assert f'{pkl} data_list[0]: images.CAM_FRONT.cam2img missing or not a finite 3x3/3x4/4x4 ' \
           'matrix' in probs
    assert f'{pkl} data_list[1]: ego2global missing or not a finite 4x4 matrix' in probs
    assert f'{pkl} data_list[1]: images.CAM_SIDE_LEFT.lidar2cam is singular (the model ' \
           'inverts it)' in probs
    assert not any('data_list[0]' in p and 'singular' in p for p in probs)
    bin_path = os.path.join(root, 'kitti_format', 'training', 'velodyne', '1000000.bin')
    with open(bin_path, 'ab') as f:
        f.write(b'\x00' * 5)
    with pytest.raises(DataFileError, match='1000000.bin: size'):
        read_points_bin(bin_path)


def test_load_interval_only_needs_kept_frames(root):
    for c in range(5):
        os.remove(os.path.join(root, 'kitti_format', 'training', f'image_{c}', '0000001.jpg'))
    assert len(_problems(root)) == 5
    assert _problems(root, load_interval=2) == []


def test_instance_id_jumping_between_objects(root):
    occ_dir = os.path.join(root, 'pano_voxel04', 'training', '000')
    with np.load(os.path.join(occ_dir, '000_04.npz')) as f0, \
            np.load(os.path.join(occ_dir, '001_04.npz')) as f1:
        ids0 = set(np.unique(f0['instances'][f0['semantics'] == 1]).tolist())
        sem, ins = f1['semantics'].copy(), f1['instances'].copy()
    common = sorted((ids0 & set(np.unique(ins[sem == 1]).tolist())) - {0})
    assert common
    moved = common[0]
    centre = np.argwhere(ins == moved).mean(0)
    far = [0 if centre[0] > 100 else 196, 0 if centre[1] > 100 else 196]
    ins[ins == moved] = 0
    sem[far[0]:far[0] + 4, far[1]:far[1] + 4, 3:7] = 1
    ins[far[0]:far[0] + 4, far[1]:far[1] + 4, 3:7] = moved
    _rewrite_npz(os.path.join(occ_dir, '001_04.npz'), semantics=sem, instances=ins)
    probs = _problems(root)
    assert len(probs) == 1 and f'instance id {moved} jumps' in probs[0], probs
    assert probs[0].startswith(os.path.join(occ_dir, '001_04.npz'))
