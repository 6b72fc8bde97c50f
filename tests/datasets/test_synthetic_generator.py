"""Synthetic TrackOcc-Waymo generator: layout, determinism, consistency of labels and sensors."""
import filecmp
import os
import pickle

import cv2
import numpy as np
import pytest

from trackocc.datasets.data_checker import check_data_root
from trackocc.datasets.synthetic import generate_synthetic_dataset
from trackocc.structures import CAMERA_NAMES, CLASS_COLORS, THING_CLASSES
from trackocc.structures.occ_classes import FREE

FRAMES = 5


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synth') / 'data')
    generate_synthetic_dataset(root, train_seqs=1, val_seqs=1, frames_per_seq=FRAMES, seed=3,
                               image_size=(320, 224), progress=False)
    return root


def _infos(root, split):
    name = ('waymo_infos_train_jpg.pkl', 'waymo_infos_val_jpg.pkl')[split]
    with open(os.path.join(root, 'kitti_format', name), 'rb') as f:
        return pickle.load(f)


def _occ(root, info):
    idx = info['sample_idx']
    split = ('training', 'validation')[idx // 1_000_000]
    return np.load(os.path.join(root, 'pano_voxel04', split, f'{idx // 1000 % 1000:03d}',
                                f'{idx % 1000:03d}_04.npz'))


def test_output_passes_checker(synth_root):
    report = check_data_root(synth_root)
    assert report.ok, '\n'.join(map(str, report.problems))
    assert report.num_frames == 2 * FRAMES and report.num_sequences == 2
    assert not [d for d in os.listdir(os.path.dirname(synth_root)) if '.partial-' in d]


def test_info_fields_follow_contract(synth_root):
    for split in (0, 1):
        data = _infos(synth_root, split)
        assert data['metainfo']['classes'][15] == 'free'
        frames = data['data_list']
        assert [f['sample_idx'] for f in frames] == [split * 1_000_000 + k
                                                      for k in range(FRAMES)]
        stamps = np.array([f['timestamp'] for f in frames])
        assert np.all(np.diff(stamps) == 500_000)
        for f in frames:
            name = f'{f["sample_idx"]:07d}'
            assert f['lidar_points'] == dict(lidar_path=name + '.bin', num_pts_feats=6)
            assert set(f['images']) == set(CAMERA_NAMES)
            for c, cam in enumerate(CAMERA_NAMES):
                ci = f['images'][cam]
                assert ci['img_path'] == name + '.jpg'
                assert (ci['width'], ci['height']) == (320, 224)
                k, l2c = np.array(ci['cam2img']), np.array(ci['lidar2cam'])
                np.testing.assert_allclose(np.array(ci['lidar2img']), k @ l2c, atol=1e-6)
                img = cv2.imread(os.path.join(synth_root, 'kitti_format', 'training',
                                              f'image_{c}', ci['img_path']))
                assert img.shape == (224, 320, 3)
            e2g = np.array(f['ego2global'])
            np.testing.assert_allclose(e2g[:3, :3] @ e2g[:3, :3].T, np.eye(3), atol=1e-9)
            for box in f['cam_sync_instances']:
                assert len(box['bbox_3d']) == 7 and box['bbox_label_3d'] in (0, 1, 2, 3)
        occ = _occ(synth_root, frames[0])
        assert occ['semantics'].dtype == np.uint8 and occ['instances'].dtype == np.int32
        assert occ['infov'].dtype == np.bool_ and occ['mask_camera'].dtype == np.uint8


def test_deterministic_and_independent_of_workers(tmp_path):
    kw = dict(train_seqs=2, val_seqs=0, frames_per_seq=2, seed=11, image_size=(96, 64),
              progress=False)
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    generate_synthetic_dataset(a, workers=1, **kw)
    os.makedirs(b)  # an existing empty directory is fine
    generate_synthetic_dataset(b, workers=2, **kw)
    files = sorted(os.path.relpath(os.path.join(d, n), a)
                   for d, _, names in os.walk(a) for n in names)
    assert len(files) == 2 * 2 * 7 + 2  # 5 images, 1 bin, 1 npz per frame; 2 info pkls
    files_b = sorted(os.path.relpath(os.path.join(d, n), b)
                     for d, _, names in os.walk(b) for n in names)
    assert files == files_b
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    with pytest.raises(FileExistsError):
        generate_synthetic_dataset(a, **kw)


def test_ids_persistent_while_objects_move(synth_root):
    frames = _infos(synth_root, 0)['data_list']
    centroids, classes = [], []
    for info in frames:
        occ = _occ(synth_root, info)
        sem, ins = occ['semantics'], occ['instances']
        e2g = np.array(info['ego2global'])
        cen, cls = {}, {}
        for i in np.unique(ins[np.isin(sem, THING_CLASSES)]):
            if i == 0:
                continue
            ijk = np.argwhere(ins == i)
            ego_xyz = np.array([-40, -40, -1]) + 0.4 * (ijk.mean(0) + 0.5)
            cen[i] = e2g[:3, :3] @ ego_xyz + e2g[:3, 3]
            cls[i] = np.unique(sem[ins == i])
        centroids.append(cen)
        classes.append(cls)
    first, last = centroids[0], centroids[-1]
    common = set(first) & set(last)
    assert len(common) >= 3
    for i in common:
        np.testing.assert_array_equal(classes[0][i], classes[-1][i])
        assert len(classes[0][i]) == 1
    moved = [i for i in common if np.linalg.norm(first[i][:2] - last[i][:2]) > 1.0]
    assert moved, 'no thing instance moved in the global frame'
    all_ids = [set(c) for c in centroids]
    assert any(a != b for a, b in zip(all_ids[:-1], all_ids[1:])), 'no object entered or left'


def _chroma(rgb):
    rgb = np.asarray(rgb, np.float64)
    return rgb / np.maximum(rgb.sum(-1, keepdims=True), 1e-6)


def test_visible_thing_voxels_render_in_their_class_colour(synth_root):
    """A camera-visible thing voxel, projected through cam2img @ lidar2cam, lands on a pixel
    of its class colour (up to tint, texture, shading, fog, JPEG) in at least one camera; a
    voxel seen by one camera may be hidden in another, and thin voxels may be visible only
    through rays that miss their centre, hence 'most' rather than 'all'."""
    ref = _chroma(CLASS_COLORS[:FREE])
    ratios = {}
    for split in (0, 1):
        for info in _infos(synth_root, split)['data_list'][::2]:
            occ = _occ(synth_root, info)
            sem = occ['semantics']
            visible = occ['mask_camera'].astype(bool) & occ['infov']
            images = [cv2.imread(os.path.join(synth_root, 'kitti_format', 'training',
                                              f'image_{c}', info['images'][cam]['img_path']))
                      [..., ::-1] for c, cam in enumerate(CAMERA_NAMES)]
            for cls in THING_CLASSES:
                ijk = np.argwhere(visible & (sem == cls))
                pts = np.c_[np.array([-40, -40, -1]) + 0.4 * (ijk + 0.5), np.ones(len(ijk))]
                hit = np.zeros(len(ijk), bool)
                seen = np.zeros(len(ijk), bool)
                for cam, img in zip(CAMERA_NAMES, images):
                    p = pts @ np.array(info['images'][cam]['lidar2img']).T
                    z = np.maximum(p[:, 2], 1e-6)
                    u, v = np.floor(p[:, 0] / z).astype(int), np.floor(p[:, 1] / z).astype(int)
                    inside = (p[:, 2] > 0.5) & (u >= 0) & (u < img.shape[1]) & (v >= 0) & \
                        (v < img.shape[0])
                    colours = img[v[inside], u[inside]]
                    nearest = np.argmin(
                        ((_chroma(colours)[:, None] - ref[None]) ** 2).sum(-1), 1)
                    hit[inside] |= nearest == cls
                    seen |= inside
                m, n = ratios.get(cls, (0, 0))
                ratios[cls] = (m + int(hit.sum()), n + int(seen.sum()))
    assert ratios[1][1] > 100 and ratios[2][1] > 10, ratios
    # vehicles are big and mostly seen whole; a pedestrian voxel is often seen only past a tree
    # trunk or a car (random pixels would match a class colour in a few % of the cases)
    total = [sum(r[i] for r in ratios.values()) for i in (0, 1)]
    assert total[0] / total[1] > 0.85, ratios
    for cls, (m, n) in ratios.items():
        if n >= 10:
            assert m / n > 0.45, f'class {cls}: {m}/{n} visible voxels on their colour'


def test_lidar_points_lie_on_occupied_voxels(synth_root):
    info = _infos(synth_root, 0)['data_list'][2]
    pts = np.fromfile(os.path.join(synth_root, 'kitti_format', 'training', 'velodyne',
                                   info['lidar_points']['lidar_path']), np.float32)
    pts = pts.reshape(-1, 6)
    assert len(pts) > 10_000 and np.isfinite(pts).all()
    occ = _occ(synth_root, info)
    occupied = occ['semantics'] != FREE
    ijk = np.floor((pts[:, :3] - np.array([-40, -40, -1])) / 0.4).astype(int)
    inside = np.all((ijk >= 1) & (ijk < np.array([199, 199, 15])), 1)
    ijk = ijk[inside]
    near = np.zeros(len(ijk), bool)
    for d in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T:
        n = ijk + d
        near |= occupied[n[:, 0], n[:, 1], n[:, 2]]
    assert len(ijk) > 5000 and near.mean() > 0.99
    # every voxel holding a point was seen by the LiDAR
    assert occ['mask_lidar'][ijk[:, 0], ijk[:, 1], ijk[:, 2]].mean() > 0.95


def test_labels_and_points_do_not_depend_on_image_size(tmp_path):
    kw = dict(train_seqs=1, val_seqs=0, frames_per_seq=1, seed=2, progress=False)
    small, large, short = (str(tmp_path / n) for n in ('small', 'large', 'short'))
    generate_synthetic_dataset(small, image_size=(96, 64), **kw)
    generate_synthetic_dataset(large, image_size=(192, 128), **kw)
    for rel in ('pano_voxel04/training/000/000_04.npz',
                'kitti_format/training/velodyne/0000000.bin'):
        assert filecmp.cmp(os.path.join(small, rel), os.path.join(large, rel), shallow=False)
    # Waymo-like shorter side cameras
    generate_synthetic_dataset(short, image_size=(96, 64), side_height=44, **kw)
    images = _infos(short, 0)['data_list'][0]['images']
    assert [images[c]['height'] for c in CAMERA_NAMES] == [64, 64, 64, 44, 44]
    img = cv2.imread(os.path.join(short, 'kitti_format', 'training', 'image_4', '0000000.jpg'))
    assert img.shape == (44, 96, 3)
    assert check_data_root(short).ok
