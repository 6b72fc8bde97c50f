"""Constants of the synthetic TrackOcc-Waymo generator alone.

The facts it shares with the rest of trackocc (class table and colours, cameras, grid
geometry, sample index, file layout) live in :mod:`trackocc.structures`.
"""
import numpy as np

from ...structures.occ_grid import GRID_MIN, VOXEL_SIZE

SKY_HORIZON = np.array((205, 220, 238), dtype=np.float64)
SKY_ZENITH = np.array((105, 150, 215), dtype=np.float64)

#: LiDAR intensity per class (roughly Waymo-like: retro-reflective signs bright)
CLASS_INTENSITY = np.array([
    0.15, 0.25, 0.12, 0.9, 0.2, 0.5, 0.3, 0.7, 0.2, 0.25,
    0.18, 0.1, 0.08, 0.06, 0.12, 0.0], dtype=np.float64)

#: ground top surface (the ground layer is voxel k = 2, z in [-0.2, 0.2))
GROUND_LAYER = 2
GROUND_TOP_Z = GRID_MIN[2] + VOXEL_SIZE * (GROUND_LAYER + 1)

# ----------------------------------------------------------------------------- sensors
LIDAR_FOLDER = 'velodyne'
NUM_POINT_FEATS = 6
FRAME_INTERVAL_S = 0.5
