"""Synthetic network inputs for benchmarks, FLOP counts and GPU smoke tests: a ring of pinhole
cameras and one collated clip (uint8 images + TrackDataSample of Det3DDataSamples, optional
constructed ground truth) at the geometry a built TrackOcc model expects."""
import math
from typing import Dict

import numpy as np
import torch

CAM_YAWS = (0.0, 45.0, -45.0, 90.0, -90.0)


def input_geometry(model) -> tuple:
    """(num_cams, (H, W)) the model expects."""
    vt = model.img_view_transformer
    size = getattr(vt, 'input_size', None)
    if size is None:
        raise ValueError('the model\'s view transformer has no input_size')
    num_cams = getattr(model.occ_encoder, 'num_cams', len(CAM_YAWS))
    return int(num_cams), (int(size[0]), int(size[1]))


def camera_matrices(num_cams: int, img_hw: tuple) -> Dict[str, np.ndarray]:
    """cam2img, lidar2cam, img_aug_matrix, lidar2img, each (N, 4, 4), of a ring of pinhole
    cameras 2 m above the ego origin (focal 1.07 x width, as Waymo's front camera)."""
    H, W = img_hw
    cam2img, lidar2cam = [], []
    for n in range(num_cams):
        yaw = math.radians(CAM_YAWS[n % len(CAM_YAWS)] + 360.0 * (n // len(CAM_YAWS)) / num_cams)
        fwd = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        cam2ego = np.eye(4)
        cam2ego[:3, :3] = np.stack([right, [0.0, 0.0, -1.0], fwd], axis=1)
        cam2ego[:3, 3] = (1.5, 0.0, 2.0)
        k = np.eye(4)
        k[:3, :3] = [[1.07 * W, 0.0, W / 2], [0.0, 1.07 * W, H / 2], [0.0, 0.0, 1.0]]
        cam2img.append(k)
        lidar2cam.append(np.linalg.inv(cam2ego))
    cam2img, lidar2cam = np.stack(cam2img), np.stack(lidar2cam)
    aug = np.broadcast_to(np.eye(4), (num_cams, 4, 4)).copy()
    return dict(cam2img=cam2img.astype(np.float32), lidar2cam=lidar2cam.astype(np.float32),
                img_aug_matrix=aug.astype(np.float32),
                lidar2img=(aug @ cam2img @ lidar2cam).astype(np.float32))


def _frame_sample(t: int, cams: dict, img_hw: tuple, num_cams: int, occ_size, with_gt: bool):
    from trackocc.structures.occ_data_sample import OccDataSample, OccupancyData
    from trackocc.structures.occ_voxel_counts import (COUNTED_FIELDS, VOXEL_COUNTS_KEY,
                                                      occupancy_voxel_counts)
    ego = np.eye(4)
    ego[0, 3] = 2.0 * t
    meta = dict(sample_idx=t, sequence_id=0, frame_idx=t, timestamp=0.5 * t,
                start_of_sequence=t == 0, ego2global=ego, img_shape=img_hw,
                num_views=num_cams, **cams)
    frame = OccDataSample(metainfo=meta)
    if with_gt:
        gen = torch.Generator().manual_seed(t)
        X, Y, Z = occ_size
        sem = torch.full(occ_size, 15, dtype=torch.long)
        sem[:, :, :2] = 13  # road
        sem[:X // 10, :, 2:Z // 2 + 2] = 10  # building row
        inst = torch.zeros(occ_size, dtype=torch.long)
        objects = [(X // 2 + 10 + 3 * t, Y // 2 - 5, 1), (X // 2 + 20, Y // 2 + 20, 1),
                   (X // 2 - 10, Y // 2 - 20, 2)]
        for k, (x0, y0, label) in enumerate(objects):
            w = 10 if label == 1 else 2
            sem[x0:x0 + w, y0:y0 + max(w // 2, 1), 2:6] = label
            inst[x0:x0 + w, y0:y0 + max(w // 2, 1), 2:6] = 11 + k
        visible = torch.rand(occ_size, generator=gen) > 0.2
        frame.gt_occ = OccupancyData(
            semantics=sem, instances=inst, mask_camera=visible, mask_lidar=visible,
            infov=torch.ones(occ_size, dtype=torch.bool), instance_ids=torch.tensor([11, 12, 13]),
            instance_labels=torch.tensor([1, 1, 2]))
        # as PackTrackOccInputs counts them in the loader's workers
        frame.gt_occ.set_metainfo({VOXEL_COUNTS_KEY: occupancy_voxel_counts(
            *(frame.gt_occ.get(key).numpy() for key in COUNTED_FIELDS))})
        depth = torch.rand(num_cams, *img_hw, generator=gen) * 40 + 2
        frame.gt_depth = depth * (torch.rand(num_cams, *img_hw, generator=gen) > 0.95)
    return frame


def synthetic_batch(model, num_frames: int, with_gt: bool, seed: int = 0) -> dict:
    """One collated batch (batch 1) of ``num_frames`` frames: uint8 images (T, N, 3, H, W)
    and a ``ClipDataSample`` (a ``TrackDataSample``) of per-frame ``Det3DDataSample`` s (with
    gt when ``with_gt``)."""
    from ..structures.clip_data_sample import ClipDataSample
    num_cams, img_hw = input_geometry(model)
    cams = camera_matrices(num_cams, img_hw)
    clip = ClipDataSample()
    clip.video_data_samples = [_frame_sample(t, cams, img_hw, num_cams, tuple(model.occ_size),
                                             with_gt) for t in range(num_frames)]
    img = torch.randint(0, 256, (num_frames, num_cams, 3, *img_hw), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(seed))
    return dict(inputs=[dict(img=img)], data_samples=[clip])
