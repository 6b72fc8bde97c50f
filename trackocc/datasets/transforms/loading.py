"""Per-frame loading transforms: the five camera images and the panoptic occupancy ground truth.

They act on one frame's results dict (run them inside ``TransformBroadcaster`` for clips).
"""
from typing import Optional, Sequence

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.datasets.transforms import LoadPointsFromFile
from trackocc.registry import TRANSFORMS
from mmengine.fileio import get

from ...structures.cameras import CAMERA_NAMES
from ...structures.occ_classes import NUM_CLASSES, THING_CLASSES
from ...structures.occ_grid import GRID_SHAPE
from ...structures.occ_npz import GT_KEYS, OccFileError, load_gt_frame
from ..image_integrity import CorruptImageError, decode_checked

_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def _as_4x4(matrix, what: str) -> np.ndarray:
    mat = np.asarray(matrix, dtype=np.float64)
    if mat.shape == (3, 3):
        out = np.eye(4)
        out[:3, :3] = mat
        return out
    if mat.shape == (3, 4):
        return np.concatenate([mat, [[0., 0., 0., 1.]]], axis=0)
    if mat.shape != (4, 4):
        raise ValueError(f'{what} must be 3x3, 3x4 or 4x4, got shape {mat.shape}')
    return mat


@TRANSFORMS.register_module()
class LoadMultiViewImages(BaseTransform):
    """Load the camera images of one frame (cameras may differ in size).

    Required keys: ``images`` (dict cam -> dict(img_path, cam2img, lidar2cam[, height, width])).
    Added keys: ``img`` list of N (H_i, W_i, 3) uint8 arrays, ``cam_names``, ``img_path``,
    ``ori_shape`` list of the original (H_i, W_i), ``img_shape`` list of the loaded sizes,
    ``cam2img``, ``lidar2cam``, ``img_aug_matrix`` (original -> loaded pixels: identity, or
    a 1 / ``decode_reduce`` scale), ``lidar2img`` (N, 4, 4) float64, ``num_views``.

    Args:
        cams (sequence[str]): Camera names, in the order of the network input.
        channel_order (str): 'rgb' (default) or 'bgr'.
        imdecode_backend (str): mmcv decoding backend ('cv2', 'pillow', ...).
        decode_reduce (int): 1, or 2 / 4 / 8 to let the JPEG decoder shrink the image by that
            factor (much faster; use it when the augmentation downscales by more than it,
            e.g. 2 for 1920x1280 -> 704x256). Needs the cv2 backend.
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self,
                 cams: Sequence[str] = CAMERA_NAMES,
                 channel_order: str = 'rgb',
                 imdecode_backend: str = 'cv2',
                 decode_reduce: int = 1,
                 backend_args: Optional[dict] = None) -> None:
        if decode_reduce != 1 and decode_reduce not in _REDUCED_FLAGS:
            raise ValueError(f'decode_reduce must be 1, 2, 4 or 8, got {decode_reduce}')
        if decode_reduce != 1 and imdecode_backend != 'cv2':
            raise ValueError('decode_reduce > 1 needs imdecode_backend="cv2"')
        if channel_order not in ('rgb', 'bgr'):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.cams = tuple(cams)
        self.channel_order = channel_order
        self.imdecode_backend = imdecode_backend
        self.decode_reduce = int(decode_reduce)
        self.backend_args = backend_args

    def _decode(self, content: bytes) -> np.ndarray:
        """Decode; truncated or damaged JPEG data raises ``CorruptImageError``."""
        return decode_checked(self._decode_unchecked, content)

    def _decode_unchecked(self, content: bytes) -> np.ndarray:
        if self.decode_reduce == 1:
            return mmcv.imfrombytes(content, flag='color', channel_order=self.channel_order,
                                    backend=self.imdecode_backend)
        img = cv2.imdecode(np.frombuffer(content, np.uint8), _REDUCED_FLAGS[self.decode_reduce])
        if img is not None and self.channel_order == 'rgb':
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return img

    def _read(self, path: str, cam: str, results: dict) -> np.ndarray:
        where = f'{type(self).__name__}: {cam} image {path} (sample {results.get("sample_idx")})'
        try:
            content = get(path, backend_args=self.backend_args)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{where} does not exist') from err
        try:
            img = self._decode(content)
        except CorruptImageError as err:
            raise ValueError(f'{where} is corrupt: {err.reason}') from None
        except Exception as err:  # decoders raise many types on corrupt data
            raise ValueError(f'{where} cannot be decoded: {err}') from err
        if img is None or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'{where} cannot be decoded as a colour image')
        return img

    def transform(self, results: dict) -> dict:
        images = results['images']
        imgs, cam2img, lidar2cam, paths, ori_shapes = [], [], [], [], []
        red = self.decode_reduce
        for cam in self.cams:
            if cam not in images:
                raise KeyError(f'{type(self).__name__}: sample {results.get("sample_idx")} has '
                               f'no camera {cam} (has {sorted(images)})')
            info = images[cam]
            img = self._read(info['img_path'], cam, results)
            imgs.append(img)
            paths.append(info['img_path'])
            cam2img.append(_as_4x4(info['cam2img'], f'{cam} cam2img'))
            lidar2cam.append(_as_4x4(info['lidar2cam'], f'{cam} lidar2cam'))
            shape = (img.shape[0] * red, img.shape[1] * red)
            if red > 1 and info.get('height') and info.get('width') and \
                    abs(info['height'] - shape[0]) < red and abs(info['width'] - shape[1]) < red:
                shape = (int(info['height']), int(info['width']))
            ori_shapes.append(shape)
        results['img'] = imgs
        results['cam_names'] = list(self.cams)
        results['img_path'] = paths
        results['ori_shape'] = ori_shapes
        results['img_shape'] = [img.shape[:2] for img in imgs]
        results['cam2img'] = np.stack(cam2img)
        results['lidar2cam'] = np.stack(lidar2cam)
        results['img_aug_matrix'] = np.tile(np.diag([1. / red, 1. / red, 1., 1.]),
                                            (len(imgs), 1, 1))
        results['lidar2img'] = results['img_aug_matrix'] @ results['cam2img'] @ \
            results['lidar2cam']
        results['num_views'] = len(imgs)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(cams={self.cams}, channel_order={self.channel_order}, '
                f'imdecode_backend={self.imdecode_backend}, decode_reduce={self.decode_reduce})')


@TRANSFORMS.register_module()
class LoadLiDARPoints(LoadPointsFromFile):
    """mmdet3d ``LoadPointsFromFile`` whose errors name the file.

    Same arguments and output (``points``: ``LiDARPoints`` (P, len(use_dim))); a missing file
    or one whose size is not a whole number of ``load_dim`` float32 values raises an error
    naming it. Waymo ``.bin``: ``load_dim=6`` (x y z intensity elongation 0).
    """

    def _load_points(self, pts_filename: str) -> np.ndarray:
        name = type(self).__name__
        try:
            points = super()._load_points(pts_filename)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{name}: LiDAR file {pts_filename} does not exist') from err
        if points.size % self.load_dim:
            raise ValueError(f'{name}: LiDAR file {pts_filename} holds {points.size} float32 '
                             f'values, not a multiple of load_dim={self.load_dim} (truncated?)')
        return points


@TRANSFORMS.register_module()
class LoadPanopticOccupancy(BaseTransform):
    """Load the panoptic occupancy npz of one frame.

    Required keys: ``occ_path``.
    Added key ``gt_occ`` (dict of numpy arrays, all (X, Y, Z) = ``grid_size``):
    ``semantics`` int64, ``instances`` int64 (ids of voxels whose class is not a thing class
    are zeroed, e.g. signs), ``mask_camera``, ``mask_lidar``, ``infov`` bool,
    ``instance_ids`` (K,) int64 and ``instance_labels`` (K,) int64: the thing instances that
    have at least one voxel inside ``table_mask`` (& ``infov``), ids ascending.

    Args:
        thing_classes (sequence[int]): Class ids that keep their instance ids.
        table_mask (str, optional): 'mask_camera' (reference default), 'mask_lidar' or None
            (all voxels): which voxels count when listing the instances of the frame.
        grid_size (tuple[int]): Expected array shape.
        num_classes (int): Class ids must lie in ``[0, num_classes)``; a file with other
            labels (or negative instance ids, or masks that are not 0/1) raises an error
            naming it instead of being trained on (the losses would silently ignore them).
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self,
                 thing_classes: Sequence[int] = THING_CLASSES,
                 table_mask: Optional[str] = 'mask_camera',
                 grid_size: Sequence[int] = GRID_SHAPE,
                 num_classes: int = NUM_CLASSES,
                 backend_args: Optional[dict] = None) -> None:
        if table_mask not in ('mask_camera', 'mask_lidar', None):
            raise ValueError(f"table_mask must be 'mask_camera', 'mask_lidar' or None, "
                             f'got {table_mask!r}')
        self.thing_classes = tuple(int(c) for c in thing_classes)
        self.table_mask = table_mask
        self.grid_size = tuple(grid_size)
        self.num_classes = int(num_classes)
        self.backend_args = backend_args

    def _load(self, path: str) -> dict:
        """The five arrays of ``path`` as stored, checked (``trackocc.structures.occ_npz``)."""
        name = type(self).__name__
        try:
            content = get(path, backend_args=self.backend_args)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{name}: occupancy file {path} does not exist') from err
        try:
            return load_gt_frame(content, self.grid_size, GT_KEYS, self.num_classes,
                                 path=str(path), check_crc=True)
        except OccFileError as err:
            raise ValueError(f'{name}: occupancy file {err}') from None

    def transform(self, results: dict) -> dict:
        path = results['occ_path']
        raw = self._load(path)
        semantics = raw['semantics'].astype(np.int64)
        instances = raw['instances'].astype(np.int64)
        instances[~np.isin(semantics, self.thing_classes)] = 0
        occ = dict(semantics=semantics, instances=instances,
                   mask_camera=raw['mask_camera'].astype(bool),
                   mask_lidar=raw['mask_lidar'].astype(bool), infov=raw['infov'].astype(bool))
        counted = occ['infov'] if self.table_mask is None else occ['infov'] & occ[self.table_mask]
        ids_vis, labels_vis = instances[counted], semantics[counted]
        keep = ids_vis != 0
        pairs = np.unique(np.stack([ids_vis[keep], labels_vis[keep]], axis=1), axis=0)
        ids, first = np.unique(pairs[:, 0], return_index=True)
        if len(ids) != len(pairs):
            bad = [int(i) for i in ids if np.sum(pairs[:, 0] == i) > 1]
            raise ValueError(f'{type(self).__name__}: instances {bad} in {path} span more than '
                             'one semantic class')
        occ['instance_ids'] = ids.astype(np.int64)
        occ['instance_labels'] = pairs[first, 1].astype(np.int64)
        results['gt_occ'] = occ
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(thing_classes={self.thing_classes}, '
                f'table_mask={self.table_mask}, grid_size={self.grid_size}, '
                f'num_classes={self.num_classes})')
