"""Depth-map pixel of a projected LiDAR point: rounded (the reference, the default) or floored."""
import numpy as np
import pytest

from trackocc.registry import TRANSFORMS
from trackocc.datasets.transforms import PointsToMultiViewDepth, points_to_depth_map

# (u, v, depth): round -> (col 3, row 2), floor -> (col 2, row 1)
POINT = np.array([[2.6, 1.7, 10.0]])


def test_points_to_depth_map_round_and_floor():
    rounded = points_to_depth_map(POINT, 4, 5, (2.0, 42.0))
    assert np.argwhere(rounded).tolist() == [[2, 3]]
    floored = points_to_depth_map(POINT, 4, 5, (2.0, 42.0), pixel_index='floor')
    assert np.argwhere(floored).tolist() == [[1, 2]]
    # a point in the last half pixel rounds out of the image (the reference drops it)
    edge = np.array([[4.7, 1.0, 10.0]])
    assert not points_to_depth_map(edge, 4, 5, (2.0, 42.0)).any()
    assert points_to_depth_map(edge, 4, 5, (2.0, 42.0), pixel_index='floor')[1, 4] == 10.0
    with pytest.raises(ValueError, match='pixel_index'):
        points_to_depth_map(POINT, 4, 5, (2.0, 42.0), pixel_index='ceil')


@pytest.mark.parametrize('pixel_index,pixel', [(None, (2, 3)), ('round', (2, 3)),
                                              ('floor', (1, 2))])
def test_transform_passes_pixel_index(pixel_index, pixel):
    cfg = dict(type='PointsToMultiViewDepth', depth_range=(2.0, 42.0))
    if pixel_index is not None:
        cfg['pixel_index'] = pixel_index
    transform = TRANSFORMS.build(cfg)
    # identity camera: the point (u * d, v * d, d) projects to (u, v) at depth d
    xyz = np.array([[2.6 * 10.0, 1.7 * 10.0, 10.0]])
    out = transform(dict(points=xyz, lidar2img=np.eye(4)[None], img_shape=(4, 5)))
    assert np.argwhere(out['gt_depth'][0]).tolist() == [list(pixel)]
    with pytest.raises(ValueError, match='pixel_index'):
        PointsToMultiViewDepth(pixel_index='nearest')
