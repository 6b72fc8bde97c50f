"""Shared pytest fixtures: small data sets in the TrackOcc-Waymo layout (docs/data_contract.md).

- ``tiny_data_root``: a hand-built 3-sequence set (boxes painted into the images by projecting
  their corners), written in milliseconds; used by error-path and geometry unit tests.
- ``synthetic_data_root``: a demo-sized set of the synthetic generator
  (``trackocc.datasets.synthetic``), generated once per test session.
"""
import os
import os.path as osp
import pickle

import numpy as np
import pytest

from trackocc.structures import (CAMERA_FOLDERS, CAMERA_NAMES, FREE_CLASS, GRID_MIN, GRID_SHAPE,
                                 INFO_FILES, OCC_CLASS_NAMES, OCC_DIR, VOXEL_SIZE,
                                 make_sample_idx, occ_file_path)
from trackocc.structures.occ_classes import ROAD

CAMS = CAMERA_NAMES
CAM_YAW_DEG = (0., 45., -45., 90., -90.)
TINY_SIZES = {'CAM_SIDE_LEFT': (96, 48), 'CAM_SIDE_RIGHT': (96, 48)}  # (W, H); others 96x64
TINY_COLORS = {1: (40, 70, 200), 2: (215, 40, 40), 3: (235, 225, 30)}
BACKGROUND = (128, 128, 128)


def _camera(yaw_deg: float, width: int, height: int):
    """lidar2cam (4x4) of a camera 2 m above the ego origin looking along ``yaw``; cam2img."""
    yaw = np.deg2rad(yaw_deg)
    fwd = np.array([np.cos(yaw), np.sin(yaw), 0.])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.])
    down = np.array([0., 0., -1.])
    cam2ego = np.eye(4)
    cam2ego[:3, :3] = np.stack([right, down, fwd], axis=1)
    cam2ego[:3, 3] = (0., 0., 2.)
    cam2img = np.eye(4)
    cam2img[:3, :3] = [[60., 0., width / 2], [0., 60., height / 2], [0., 0., 1.]]
    return np.linalg.inv(cam2ego), cam2img


def tiny_objects(frame: int):
    """(class, instance id, (x0, x1, y0, y1, z0, z1) metres) of a frame; the car moves."""
    return [(1, 7, (8.0 + frame, 12.0 + frame, -1.6, 1.6, -1.0, 1.4)),     # vehicle ahead
            (2, 9, (2.0, 2.8, 6.0, 6.8, -1.0, 1.0)),                        # pedestrian left
            (3, 4, (4.0, 4.8, -8.0, -7.2, 0.6, 2.2))]                        # sign right


def _voxel_range(lo: float, hi: float, origin: float) -> slice:
    return slice(int(round((lo - origin) / VOXEL_SIZE)), int(round((hi - origin) / VOXEL_SIZE)))


def _paint(img, box, lidar2img, color):
    x0, x1, y0, y1, z0, z1 = box
    corners = np.array([[x, y, z, 1.] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)])
    proj = corners @ lidar2img.T
    if np.any(proj[:, 2] <= 0.1):
        return
    uv = proj[:, :2] / proj[:, 2:3]
    height, width = img.shape[:2]
    u0, v0 = np.clip(np.floor(uv.min(0)).astype(int), 0, [width, height])
    u1, v1 = np.clip(np.ceil(uv.max(0)).astype(int) + 1, 0, [width, height])
    img[v0:v1, u0:u1] = color


def write_tiny_dataset(root: str, seqs=((0, 0, 6), (0, 1, 4), (1, 0, 5))) -> str:
    """Write ``seqs`` = (split, seq, num_frames) in the release layout under ``root``."""
    import cv2
    kitti = osp.join(root, 'kitti_format')
    for cam in CAMS:
        os.makedirs(osp.join(kitti, 'training', CAMERA_FOLDERS[cam]), exist_ok=True)
    os.makedirs(osp.join(kitti, 'training', 'velodyne'), exist_ok=True)
    infos = {0: [], 1: []}
    for split, seq, num_frames in seqs:
        for frame in range(num_frames):
            sample_idx = make_sample_idx(split, seq, frame)
            name = f'{sample_idx:07d}'
            sem = np.full(GRID_SHAPE, FREE_CLASS, np.uint8)
            sem[:, :, 0:2] = ROAD
            inst = np.zeros(GRID_SHAPE, np.int32)
            images, points = {}, [np.array([[x, y, -0.2] for x in range(3, 30, 2)
                                            for y in range(-6, 7, 2)], np.float64)]
            for cls, iid, box in tiny_objects(frame):
                ix = _voxel_range(box[0], box[1], GRID_MIN[0])
                iy = _voxel_range(box[2], box[3], GRID_MIN[1])
                iz = _voxel_range(box[4], box[5], GRID_MIN[2])
                sem[ix, iy, iz], inst[ix, iy, iz] = cls, iid
                ys = np.linspace(box[2] + 0.1, box[3] - 0.1, 4)
                zs = np.linspace(box[4] + 0.1, box[5] - 0.1, 4)
                points.append(np.array([[box[0], y, z] for y in ys for z in zs]))
            for cam, yaw in zip(CAMS, CAM_YAW_DEG):
                width, height = TINY_SIZES.get(cam, (96, 64))
                lidar2cam, cam2img = _camera(yaw, width, height)
                img = np.full((height, width, 3), BACKGROUND, np.uint8)
                # paint far to near so nearer boxes cover farther ones
                objs = sorted(tiny_objects(frame), key=lambda o: -np.hypot(o[2][0], o[2][2]))
                for cls, _, box in objs:
                    _paint(img, box, cam2img @ lidar2cam, TINY_COLORS[cls])
                cv2.imwrite(osp.join(kitti, 'training', CAMERA_FOLDERS[cam], name + '.jpg'),
                            img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
                images[cam] = dict(img_path=name + '.jpg', height=height, width=width,
                                   cam2img=cam2img.tolist(), lidar2cam=lidar2cam.tolist(),
                                   lidar2img=(cam2img @ lidar2cam).tolist())
            pts = np.concatenate(points)
            pts = np.concatenate([pts, np.zeros((len(pts), 3))], axis=1).astype(np.float32)
            pts.tofile(osp.join(kitti, 'training', 'velodyne', name + '.bin'))
            mask = np.ones(GRID_SHAPE, np.uint8)
            occ_path = occ_file_path(osp.join(root, OCC_DIR), split, seq, frame)
            os.makedirs(osp.dirname(occ_path), exist_ok=True)
            np.savez_compressed(occ_path, semantics=sem,
                                instances=inst, mask_camera=mask, mask_lidar=mask,
                                infov=mask.astype(bool))
            ego2global = np.eye(4)
            ego2global[0, 3] = 2.0 * frame + 100 * seq
            infos[split].append(dict(
                sample_idx=sample_idx, timestamp=1_000_000 + 500_000 * frame,
                context_name=f'tiny_{split}_{seq}', ego2global=ego2global.tolist(),
                lidar_points=dict(lidar_path=name + '.bin', num_pts_feats=6), images=images,
                cam_sync_instances=[dict(bbox_3d=[(b[0] + b[1]) / 2, (b[2] + b[3]) / 2, b[4],
                                                  b[1] - b[0], b[3] - b[2], b[5] - b[4], 0.],
                                         bbox_label_3d=0, instance_id=iid)
                                    for _, iid, b in tiny_objects(frame)]))
    metainfo = dict(dataset='TrackOccWaymo', version='tiny', classes=list(OCC_CLASS_NAMES))
    for split, fname in INFO_FILES.items():
        with open(osp.join(kitti, fname), 'wb') as f:
            pickle.dump(dict(metainfo=metainfo, data_list=infos[split]), f)
    return root


@pytest.fixture(scope='session')
def tiny_scene() -> dict:
    """What ``tiny_data_root`` draws: ``objects(frame)`` and the RGB ``colors`` per class."""
    return dict(objects=tiny_objects, colors=TINY_COLORS, background=BACKGROUND)


@pytest.fixture(scope='session')
def tiny_data_root(tmp_path_factory) -> str:
    """Hand-built data set: train seqs 0 (6 frames) and 1 (4 frames), val seq 0 (5 frames)."""
    return write_tiny_dataset(str(tmp_path_factory.mktemp('tiny-waymo')))


@pytest.fixture(scope='session')
def synthetic_data_root(tmp_path_factory) -> str:
    """Demo-sized set of the synthetic generator, written once per test session.

    2 train + 1 val sequences x 6 frames, 192x128 images (side cameras 192x96), seed 0.
    """
    from trackocc.datasets.synthetic import generate_synthetic_dataset
    root = str(tmp_path_factory.mktemp('synthetic-waymo') / 'data')
    generate_synthetic_dataset(root, train_seqs=2, val_seqs=1, frames_per_seq=6, seed=0,
                               image_size=(192, 128), side_height=96, workers=1,
                               progress=False)
    return root
