"""Isometric 3D render of a voxel grid with a numpy z-buffer (no OpenGL, no matplotlib).

The camera looks from behind-right and above the ego vehicle (from -x, -y, +z) towards the
front-left. With ``unit`` = u and ``height`` = h pixels, voxel corner (i, j, k) projects to the
integer pixel ``(col, row) = (u (i - j), -(u / 2)(i + j) - h k)`` (plus an offset), so every
face of every voxel has the same pixel footprint up to a translation. The visible faces (top,
back = -x, right = -y) that are not covered by a neighbouring occupied voxel are stamped with
precomputed footprints, nearest voxel first per pixel (depth along the view direction
``(1, 1, -u / h)``), and shaded per face: top 1.0, back 0.8, right 0.64 (side edges darker).
A 200 x 200 x 16 grid renders in about 0.1-0.3 s on one CPU core.
"""
from functools import lru_cache
from typing import Optional, Tuple

import cv2
import numpy as np

from ..structures.occ_classes import FREE_CLASS
from .palette import EMPTY_COLOR, class_colors, fade, tint_instances

#: (name, corners of the face relative to the voxel's min corner, shade)
#: (name, corners of the face relative to the voxel's min corner, shade, shade of its edges)
_FACES = (
    ('top', ((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)), 1.0, 1.0),
    ('back', ((0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1)), 0.8, 0.72),
    ('right', ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)), 0.64, 0.58),
)


def _project(i, j, k, unit: int, height: int):
    """Integer pixel (col, row) of grid corner(s) (i, j, k), before the image offset."""
    col = unit * (np.asarray(i) - np.asarray(j))
    row = -(unit // 2) * (np.asarray(i) + np.asarray(j)) - height * np.asarray(k)
    return col, row


@lru_cache(maxsize=8)
def _face_footprints(unit: int, height: int) -> Tuple[Tuple[np.ndarray, np.ndarray,
                                                            np.ndarray], ...]:
    """Per face: pixel offsets (d_row, d_col) of its filled footprint and a per-pixel shade."""
    out = []
    for _, corners, shade, edge_shade in _FACES:
        cols, rows = _project(*np.array(corners).T, unit, height)
        c0, r0 = cols.min(), rows.min()
        canvas = np.zeros((rows.max() - r0 + 1, cols.max() - c0 + 1), np.uint8)
        poly = np.stack([cols - c0, rows - r0], axis=1).astype(np.int32)
        cv2.fillConvexPoly(canvas, poly, 1)
        edge = np.zeros_like(canvas)
        cv2.polylines(edge, [poly], True, 1, 1)
        rr, cc = np.nonzero(canvas)
        pixel_shade = np.where(edge[rr, cc] > 0, edge_shade, shade).astype(np.float32)
        out.append((rr + r0, cc + c0, pixel_shade))
    return tuple(out)


def isometric_canvas_size(grid_shape, unit: int = 2, height: int = 3) -> Tuple[int, int]:
    """(H, W) of the image :func:`render_isometric` returns for a grid of ``grid_shape``."""
    num_x, num_y, num_z = grid_shape
    width = unit * (num_x + num_y) + 1
    rows = (unit // 2) * (num_x + num_y) + height * num_z + 1
    return rows, width


def render_isometric(semantics: np.ndarray,
                     instances: Optional[np.ndarray] = None,
                     visible: Optional[np.ndarray] = None,
                     *,
                     free_class: int = FREE_CLASS,
                     unit: int = 2,
                     height: int = 3,
                     instance_tint: float = 0.55,
                     invisible_fade: float = 0.55,
                     hide_invisible: bool = False,
                     background=EMPTY_COLOR) -> np.ndarray:
    """Isometric render of the occupied voxels.

    Args:
        semantics: (X, Y, Z) int class ids (``free_class`` and above are empty).
        instances: (X, Y, Z) instance ids (0 = none): instance voxels are tinted with the id's
            colour as in the BEV.
        visible: (X, Y, Z) bool camera-visibility mask: voxels outside it are darkened to
            ``invisible_fade`` towards light grey (or left out with ``hide_invisible``).
        unit: horizontal pixels per voxel step (even, >= 2); ``height``: pixels per voxel up.

    Returns:
        uint8 RGB image of :func:`isometric_canvas_size` ``(semantics.shape, unit, height)``.
    """
    if unit < 2 or unit % 2:
        raise ValueError(f'render_isometric: unit must be an even number >= 2, got {unit}')
    if height < 1:
        raise ValueError(f'render_isometric: height must be >= 1, got {height}')
    sem = np.asarray(semantics)
    if sem.ndim != 3:
        raise ValueError(f'render_isometric: semantics must be (X, Y, Z), got {sem.shape}')
    occ = (sem >= 0) & (sem < free_class)
    vis = None
    if visible is not None:
        vis = np.asarray(visible).astype(bool, copy=False)
        if vis.shape != sem.shape:
            raise ValueError(f'render_isometric: visible mask {vis.shape} != semantics '
                             f'{sem.shape}')
        if hide_invisible:
            occ = occ & vis
    if instances is not None and np.shape(instances) != sem.shape:
        raise ValueError(f'render_isometric: instances {np.shape(instances)} != semantics '
                         f'{sem.shape}')
    rows_total, cols_total = isometric_canvas_size(sem.shape, unit, height)
    num_x, num_y, num_z = sem.shape
    # offsets putting the extreme corners inside the canvas
    col_off = unit * num_y
    row_off = (unit // 2) * (num_x + num_y) + height * num_z

    # exposed faces: the neighbour on the face's side is empty (or outside the grid)
    pad = np.zeros((num_x + 1, num_y + 1, num_z + 1), bool)
    pad[1:, 1:, :-1] = occ
    exposed = (occ & ~pad[1:, 1:, 1:],      # top: voxel above empty
               occ & ~pad[:-1, 1:, :-1],    # back (-x): voxel behind empty
               occ & ~pad[1:, :-1, :-1])    # right (-y)
    palette = class_colors().astype(np.float32)
    pix_list, depth_list, color_list = [], [], []
    footprints = _face_footprints(unit, height)
    for face, (mask, (d_row, d_col, shade)) in enumerate(zip(exposed, footprints)):
        ii, jj, kk = np.nonzero(mask)
        if ii.size == 0:
            continue
        color = palette[sem[ii, jj, kk]]
        if instances is not None:
            inst = np.asarray(instances)[ii, jj, kk]
            color = tint_instances(color.astype(np.uint8), inst, instance_tint).astype(
                np.float32)
        if vis is not None and not hide_invisible and invisible_fade > 0:
            color = fade(color, np.where(vis[ii, jj, kk], 0.0, invisible_fade))
        col0, row0 = _project(ii, jj, kk, unit, height)
        rows = (row0 + row_off)[:, None] + d_row[None, :]
        cols = (col0 + col_off)[:, None] + d_col[None, :]
        pix_list.append((rows * cols_total + cols).ravel().astype(np.int64))
        # depth along the view direction (1, 1, -unit / height), voxel centres; nearer = smaller
        # (the face index breaks ties on the shared edges of a voxel's faces)
        depth = ((ii + jj) * height - kk * unit).astype(np.int64) * len(_FACES) + face
        depth_list.append(np.repeat(depth, d_row.size))
        color_list.append((color[:, None, :] * shade[None, :, None]).reshape(-1, 3))
    img = np.empty((rows_total, cols_total, 3), np.uint8)
    img[:] = np.asarray(background, np.uint8)
    if not pix_list:
        return img
    pix = np.concatenate(pix_list)
    depth = np.concatenate(depth_list)
    colors = np.concatenate(color_list)
    # one sort by (pixel, depth): the first entry of every pixel is its nearest face
    key = pix * np.int64(depth.max() - depth.min() + 1) + (depth - depth.min())
    order = np.argsort(key)
    pix = pix[order]
    first = np.ones(pix.size, bool)
    first[1:] = pix[1:] != pix[:-1]
    flat = img.reshape(-1, 3)
    flat[pix[first]] = np.clip(colors[order[first]], 0, 255).astype(np.uint8)
    return img
