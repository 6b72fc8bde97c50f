"""Geometry of the occupancy grid: 200 x 200 x 16 voxels of 0.4 m in the ego (= LiDAR) frame,
x, y in [-40, 40) m, z in [-1, 5.4) m (``docs/data_contract.md``). numpy only.

Voxel (i, j, k) covers ``GRID_MIN + VOXEL_SIZE * [ijk, ijk + 1)``; its centre is
``GRID_MIN + VOXEL_SIZE * (ijk + 0.5)``.
"""
from typing import List, Sequence, Tuple, Union

import numpy as np

GRID_SHAPE: Tuple[int, int, int] = (200, 200, 16)
VOXEL_SIZE = 0.4
GRID_MIN: Tuple[float, float, float] = (-40.0, -40.0, -1.0)
GRID_MAX: Tuple[float, float, float] = (40.0, 40.0, 5.4)
#: (x0, y0, z0, x1, y1, z1), the ``pc_range`` of the model configs
PC_RANGE: Tuple[float, ...] = GRID_MIN + GRID_MAX
NUM_VOXELS = int(np.prod(GRID_SHAPE))  # 640000


def voxel_axes(grid_shape: Sequence[int] = GRID_SHAPE,
               grid_min: Sequence[float] = GRID_MIN,
               voxel_size: Union[float, Sequence[float]] = VOXEL_SIZE
               ) -> Tuple[np.ndarray, ...]:
    """Centre coordinates along each axis: three float64 arrays of length X, Y, Z (metres).
    ``voxel_size``: one size, or one per axis."""
    sizes = [voxel_size] * 3 if np.isscalar(voxel_size) else list(voxel_size)
    return tuple(grid_min[a] + sizes[a] * (np.arange(grid_shape[a]) + 0.5) for a in range(3))


def voxel_centres(ijk: np.ndarray, grid_min: Sequence[float] = GRID_MIN,
                  voxel_size: float = VOXEL_SIZE) -> np.ndarray:
    """Centres of voxels ``ijk`` (K, 3) int -> (K, 3) float64 ego coordinates in metres."""
    ijk = np.asarray(ijk)
    if ijk.ndim != 2 or ijk.shape[1] != 3:
        raise ValueError(f'voxel_centres: ijk must be (K, 3), got shape {ijk.shape}')
    return np.stack([grid_min[a] + voxel_size * (ijk[:, a] + 0.5) for a in range(3)], axis=1)


_GRID_KEYS = ('x', 'y', 'z')


def grid_geometry(grid_config: dict, owner: str = 'grid_geometry'
                  ) -> Tuple[Tuple[int, ...], List[float]]:
    """``grid_config`` {x, y, z: (lower, upper, interval)} -> (occ_size (X, Y, Z), pc_range
    [x0, y0, z0, x1, y1, z1]); errors name ``owner`` and the bad axis."""
    for key in _GRID_KEYS:
        if key not in grid_config or len(grid_config[key]) != 3:
            raise ValueError(f'{owner}: grid_config[{key!r}] must be (lower, upper, '
                             f'interval), got {grid_config.get(key)}')
    size = []
    for key in _GRID_KEYS:
        lo, hi, step = (float(v) for v in grid_config[key])
        n = (hi - lo) / step
        if step <= 0 or hi <= lo or abs(n - round(n)) > 1e-6:
            raise ValueError(f'{owner}: grid_config[{key!r}] = {grid_config[key]} does not '
                             f'split into whole voxels')
        size.append(int(round(n)))
    pc_range = [float(grid_config[k][0]) for k in _GRID_KEYS] + \
        [float(grid_config[k][1]) for k in _GRID_KEYS]
    return tuple(size), pc_range
