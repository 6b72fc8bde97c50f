"""LiDAR points -> per-camera sparse depth maps at network-input resolution (depth supervision)."""
from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from trackocc.registry import TRANSFORMS
from mmdet3d.structures.points import BasePoints


PIXEL_INDEX = ('round', 'floor')


def points_to_depth_map(points_img: np.ndarray, height: int, width: int,
                        depth_range: Sequence[float], pixel_index: str = 'round') -> np.ndarray:
    """Rasterize projected points, keeping the nearest point per pixel.

    Args:
        points_img: (P, 3) as (u, v, depth) in pixels / metres.
        height, width: output size; depth_range: [low, high) metres kept.
        pixel_index: pixel of a point at (u, v): ``'round'`` (the reference: nearest
            integer, halves to even; pixel i covers [i - 0.5, i + 0.5)) or ``'floor'``
            (pixel i covers [i, i + 1), the data contract's pixel convention).
    Returns: (height, width) float32, 0 where no point.
    """
    if pixel_index not in PIXEL_INDEX:
        raise ValueError(f'pixel_index must be one of {PIXEL_INDEX}, got {pixel_index!r}')
    to_index = np.round if pixel_index == 'round' else np.floor
    cols = to_index(points_img[:, 0]).astype(np.int64)
    rows = to_index(points_img[:, 1]).astype(np.int64)
    depth = points_img[:, 2]
    keep = ((cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
            & (depth >= depth_range[0]) & (depth < depth_range[1]))
    cols, rows, depth = cols[keep], rows[keep], depth[keep]
    depth_map = np.full(height * width, np.inf, dtype=np.float32)
    np.minimum.at(depth_map, rows * width + cols, depth.astype(np.float32))
    depth_map[np.isinf(depth_map)] = 0
    return depth_map.reshape(height, width)


@TRANSFORMS.register_module()
class PointsToMultiViewDepth(BaseTransform):
    """Project LiDAR points into every (augmented) camera image as a sparse depth map.

    Required keys: ``points`` (:class:`BasePoints` or (P, >=3) array in the ego/LiDAR frame),
    ``lidar2img`` (N, 4, 4) mapping to network-input pixels, ``img_shape`` (H, W).
    Added key: ``gt_depth`` (N, H // downsample, W // downsample) float32 metres.

    Args:
        depth_range (tuple[float]): Depths kept, [low, high) metres (the depth-net bins).
        downsample (int): Output stride relative to the input image.
        pixel_index (str): ``'round'`` (the reference) or ``'floor'`` (the data contract's
            convention, pixel i covering [i, i + 1)), see :func:`points_to_depth_map`.
    """

    def __init__(self, depth_range: Sequence[float] = (2.0, 42.0), downsample: int = 1,
                 pixel_index: str = 'round') -> None:
        if pixel_index not in PIXEL_INDEX:
            raise ValueError(f'PointsToMultiViewDepth: pixel_index must be one of '
                             f'{PIXEL_INDEX}, got {pixel_index!r}')
        self.depth_range = tuple(float(d) for d in depth_range)
        self.downsample = int(downsample)
        self.pixel_index = pixel_index

    def transform(self, results: dict) -> dict:
        points = results['points']
        if isinstance(points, BasePoints):
            points = points.tensor.numpy()
        xyz = np.ascontiguousarray(points[:, :3], dtype=np.float32)
        mats = np.asarray(results['lidar2img'], dtype=np.float32)  # (N, 4, 4)
        height, width = (int(x) // self.downsample for x in results['img_shape'])
        maps = []
        for mat in mats:
            proj = xyz @ mat[:3, :3].T + mat[:3, 3]
            front = proj[:, 2] > 1e-3
            uvd = proj[front]
            uvd[:, :2] /= uvd[:, 2:3] * self.downsample
            maps.append(points_to_depth_map(uvd, height, width, self.depth_range,
                                            self.pixel_index))
        results['gt_depth'] = np.stack(maps) if maps else np.zeros((0, height, width), np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(depth_range={self.depth_range}, '
                f'downsample={self.downsample}, pixel_index={self.pixel_index!r})')
