"""LiDAR points -> per-camera sparse depth maps at network-input resolution (depth supervision)."""
from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures.points import BasePoints


def points_to_depth_map(points_img: np.ndarray, height: int, width: int,
                        depth_range: Sequence[float]) -> np.ndarray:
    """Rasterize projected points, keeping the nearest point per pixel.

    Args:
        points_img: (P, 3) as (u, v, depth) in pixels / metres.
        height, width: output size; depth_range: [low, high) metres kept.
    Returns: (height, width) float32, 0 where no point.
    """
    cols = np.floor(points_img[:, 0]).astype(np.int64)  # pixel i covers [i, i + 1)
    rows = np.floor(points_img[:, 1]).astype(np.int64)
    depth = points_img[:, 2]
    keep = ((cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
            & (depth >= depth_range[0]) & (depth < depth_range[1]))
    cols, rows, depth = cols[keep], rows[keep], depth[keep]
    depth_map = np.zeros((height, width), dtype=np.float32)
    ranks = rows * width + cols
    order = np.lexsort((depth, ranks))  # by pixel, nearest first
    ranks, depth = ranks[order], depth[order]
    first = np.ones(len(ranks), dtype=bool)
    first[1:] = ranks[1:] != ranks[:-1]
    depth_map.reshape(-1)[ranks[first]] = depth[first]
    return depth_map


@TRANSFORMS.register_module()
class PointsToMultiViewDepth(BaseTransform):
    """Project LiDAR points into every (augmented) camera image as a sparse depth map.

    Required keys: ``points`` (:class:`BasePoints` or (P, >=3) array in the ego/LiDAR frame),
    ``lidar2img`` (N, 4, 4) mapping to network-input pixels, ``img_shape`` (H, W).
    Added key: ``gt_depth`` (N, H // downsample, W // downsample) float32 metres.

    Args:
        depth_range (tuple[float]): Depths kept, [low, high) metres (the depth-net bins).
        downsample (int): Output stride relative to the input image.
    """

    def __init__(self, depth_range: Sequence[float] = (2.0, 42.0), downsample: int = 1) -> None:
        self.depth_range = tuple(float(d) for d in depth_range)
        self.downsample = int(downsample)

    def transform(self, results: dict) -> dict:
        points = results['points']
        if isinstance(points, BasePoints):
            points = points.tensor.numpy()
        xyz1 = np.concatenate([points[:, :3], np.ones((len(points), 1))], axis=1).astype(np.float64)
        height, width = (int(x) // self.downsample for x in results['img_shape'])
        maps = []
        for lidar2img in np.asarray(results['lidar2img'], dtype=np.float64):
            proj = xyz1 @ lidar2img.T
            depth = proj[:, 2]
            front = depth > 1e-3
            uvd = np.stack([proj[front, 0] / depth[front], proj[front, 1] / depth[front],
                            depth[front]], axis=1)
            uvd[:, :2] /= self.downsample
            maps.append(points_to_depth_map(uvd, height, width, self.depth_range))
        results['gt_depth'] = np.stack(maps) if maps else np.zeros((0, height, width), np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(depth_range={self.depth_range}, '
                f'downsample={self.downsample})')
