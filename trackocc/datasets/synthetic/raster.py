"""Voxelization of the synthetic world into an ego-frame grid (numba kernels).

The render grid is the 200 x 200 x 16 label grid padded by a margin in x, y and extended
upwards (so cameras see buildings above 5.4 m and scenery beyond 40 m). ``ego`` is the
ego pose as a float64 vector (cos yaw, sin yaw, tx, ty, tz): ego frame = R(-yaw) (p - t).
A voxel belongs to a primitive when its centre lies inside it; half extents below half a
voxel are widened to half a voxel so thin poles and sign plates never vanish.
"""
import numba
import numpy as np

from .primitives import (BOX, C_CLS, C_HX, C_HY, C_HZ, C_INST, C_KIND, C_X, C_Y, C_YAW, C_Z,
                         CYLINDER, ELLIPSOID)
from .streets import ground_class


@numba.njit(cache=True)
def paint_ground(sem, gmin, vs, ego, params, ground_layer):
    """Write the ground class of every column at ``ground_layer``; sem (X, Y, Z) uint8."""
    c, s, tx, ty = ego[0], ego[1], ego[2], ego[3]
    for i in range(sem.shape[0]):
        ex = gmin[0] + vs * (i + 0.5)
        for j in range(sem.shape[1]):
            ey = gmin[1] + vs * (j + 0.5)
            gx = tx + c * ex - s * ey
            gy = ty + s * ex + c * ey
            cls, _ = ground_class(params, gx, gy)
            sem[i, j, ground_layer] = cls


@numba.njit(cache=True)
def paint_primitives(sem, inst, prims, gmin, vs, ego):
    """Rasterize global primitives (P, PRIM_COLS) into sem / inst (X, Y, Z) in order."""
    c, s, tx, ty, tz = ego[0], ego[1], ego[2], ego[3], ego[4]
    yaw_e = np.arctan2(s, c)
    nx, ny, nz = sem.shape
    half = 0.5 * vs
    for p in range(prims.shape[0]):
        kind = int(prims[p, C_KIND])
        hx = max(prims[p, C_HX], half)
        hy = max(prims[p, C_HY], half)
        hz = max(prims[p, C_HZ], half)
        dx = prims[p, C_X] - tx
        dy = prims[p, C_Y] - ty
        cx = c * dx + s * dy
        cy = -s * dx + c * dy
        cz = prims[p, C_Z] - tz
        if kind == BOX:
            rxy = np.sqrt(hx * hx + hy * hy)
        else:
            rxy = max(hx, hy)
        i0 = max(int(np.floor((cx - rxy - gmin[0]) / vs)), 0)
        i1 = min(int(np.ceil((cx + rxy - gmin[0]) / vs)), nx)
        j0 = max(int(np.floor((cy - rxy - gmin[1]) / vs)), 0)
        j1 = min(int(np.ceil((cy + rxy - gmin[1]) / vs)), ny)
        k0 = max(int(np.floor((cz - hz - gmin[2]) / vs)), 0)
        k1 = min(int(np.ceil((cz + hz - gmin[2]) / vs)), nz)
        if i0 >= i1 or j0 >= j1 or k0 >= k1:
            continue
        yaw = prims[p, C_YAW] - yaw_e
        cy_, sy_ = np.cos(yaw), np.sin(yaw)
        cls = np.uint8(prims[p, C_CLS])
        ins = np.int32(prims[p, C_INST])
        for i in range(i0, i1):
            px = gmin[0] + vs * (i + 0.5) - cx
            for j in range(j0, j1):
                py = gmin[1] + vs * (j + 0.5) - cy
                lx = cy_ * px + sy_ * py
                ly = -sy_ * px + cy_ * py
                for k in range(k0, k1):
                    lz = gmin[2] + vs * (k + 0.5) - cz
                    if kind == BOX:
                        inside = abs(lx) <= hx and abs(ly) <= hy and abs(lz) <= hz
                    elif kind == CYLINDER:
                        inside = lx * lx + ly * ly <= hx * hx and abs(lz) <= hz
                    elif kind == ELLIPSOID:
                        inside = (lx / hx) ** 2 + (ly / hy) ** 2 + (lz / hz) ** 2 <= 1.0
                    else:  # CONE: radius shrinks from hx (bottom) to hy (top)
                        t = (lz + hz) / (2 * hz)
                        rad = max(hx + (hy - hx) * t, half)
                        inside = abs(lz) <= hz and lx * lx + ly * ly <= rad * rad
                    if inside:
                        sem[i, j, k] = cls
                        inst[i, j, k] = ins


def ego_vector(pose_xyyaw, ground_z) -> np.ndarray:
    """(x, y, yaw) pose -> (cos, sin, tx, ty, tz) float64 vector used by the kernels."""
    x, y, yaw = pose_xyyaw
    return np.array([np.cos(yaw), np.sin(yaw), x, y, ground_z], np.float64)
