"""Waymo-like rig of 5 pinhole cameras (no rear camera) and the roof LiDAR.

Cameras use OpenCV axes (x right, y down, z forward). ``lidar2cam`` maps ego (= LiDAR frame)
points to camera coordinates and ``cam2img`` (4 x 4) maps camera points to pixels, as in the
info pkl. Extrinsics get a small per-sequence jitter, like calibrations of different vehicles.
"""
from dataclasses import dataclass

import numpy as np

from ...structures.cameras import CAMERA_NAMES
from ...structures.occ_grid import GRID_SHAPE, voxel_axes

# name: (x, y, z position in the ego frame, yaw in degrees); Waymo front HFOV is about 50 deg
_RIG = {
    'CAM_FRONT': ((1.54, 0.0, 2.12), 0.0),
    'CAM_FRONT_LEFT': ((1.50, 0.10, 2.12), 45.0),
    'CAM_FRONT_RIGHT': ((1.50, -0.10, 2.12), -45.0),
    'CAM_SIDE_LEFT': ((1.20, 0.25, 2.10), 90.0),
    'CAM_SIDE_RIGHT': ((1.20, -0.25, 2.10), -90.0),
}
FOCAL_PER_WIDTH = 2060.0 / 1920.0  # Waymo front camera: fx ~ 2060 px at 1920 px width
LIDAR_ORIGIN = (1.43, 0.0, 2.18)
LIDAR_ELEVATION_DEG = (-17.6, 2.4)  # Waymo top LiDAR vertical field of view
LIDAR_MAX_RANGE = 75.0


@dataclass
class Camera:
    name: str
    width: int
    height: int
    cam2img: np.ndarray  # (4, 4)
    cam2ego: np.ndarray  # (4, 4)

    @property
    def lidar2cam(self) -> np.ndarray:
        return np.linalg.inv(self.cam2ego)

    @property
    def lidar2img(self) -> np.ndarray:
        return self.cam2img @ self.lidar2cam

    @property
    def intrinsics(self) -> np.ndarray:
        """(fx, fy, cx, cy) float64."""
        k = self.cam2img
        return np.array([k[0, 0], k[1, 1], k[0, 2], k[1, 2]], np.float64)


def camera_rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """(3, 3) camera->ego rotation; columns are the camera x (right), y (down), z (forward)
    axes in the ego frame. ``pitch`` > 0 tilts the camera down."""
    fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, fwd], axis=1)


def make_rig(rng: np.random.Generator, width: int, height: int, side_height: int = None):
    """Five cameras with jittered extrinsics; ``side_height`` for shorter side images."""
    cams = []
    for name in CAMERA_NAMES:
        pos, yaw = _RIG[name]
        h = side_height if (side_height and name.startswith('CAM_SIDE')) else height
        f = FOCAL_PER_WIDTH * width * rng.uniform(0.99, 1.01)
        k = np.eye(4)
        k[0, 0] = f
        k[1, 1] = f * rng.uniform(0.998, 1.002)
        k[0, 2] = width / 2 + rng.uniform(-0.01, 0.01) * width
        k[1, 2] = h / 2 + rng.uniform(-0.01, 0.01) * h
        c2e = np.eye(4)
        c2e[:3, :3] = camera_rotation(np.deg2rad(yaw + rng.uniform(-1, 1)),
                                      np.deg2rad(rng.uniform(-0.5, 2.0)),
                                      np.deg2rad(rng.uniform(-0.5, 0.5)))
        c2e[:3, 3] = np.asarray(pos) + rng.uniform(-0.03, 0.03, 3)
        cams.append(Camera(name, width, h, k, c2e))
    return cams


def voxel_centers() -> np.ndarray:
    """(200, 200, 16, 3) ego-frame centres of the label grid."""
    return np.stack(np.meshgrid(*voxel_axes(), indexing='ij'), -1)


def frustum_mask(cams) -> np.ndarray:
    """infov: (200, 200, 16) bool, voxel centre projects inside at least one image."""
    pts = voxel_centers().reshape(-1, 3)
    infov = np.zeros(len(pts), bool)
    for cam in cams:
        p = pts @ cam.lidar2img[:3, :3].T + cam.lidar2img[:3, 3]
        z = p[:, 2]
        ok = z > 1e-3
        u = np.where(ok, p[:, 0] / np.where(ok, z, 1), -1)
        v = np.where(ok, p[:, 1] / np.where(ok, z, 1), -1)
        infov |= ok & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    return infov.reshape(GRID_SHAPE)


def lidar_angles(num_beams: int = 64, num_azimuth: int = 1500):
    """Beam elevations (B,) and azimuths (A,) in radians."""
    elev = np.deg2rad(np.linspace(LIDAR_ELEVATION_DEG[0], LIDAR_ELEVATION_DEG[1], num_beams))
    azim = np.linspace(-np.pi, np.pi, num_azimuth, endpoint=False)
    return elev, azim
