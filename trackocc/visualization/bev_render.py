"""Bird's-eye-view render of a voxel grid: the top-most occupied voxel of every column.

Grid axes are (X, Y, Z) = (forward, left, up) of the ego frame (docs/data_contract.md). In the
image, forward is up and left is left, so pixel row ``r`` shows ``i = X - 1 - r // scale`` and
column ``c`` shows ``j = Y - 1 - c // scale``; the ego vehicle sits in the image centre.

numpy + OpenCV only.
"""
from typing import NamedTuple, Optional

import cv2
import numpy as np

from ..structures.occ_classes import FREE_CLASS
from ..structures.occ_grid import VOXEL_SIZE
from .palette import EMPTY_COLOR, OUTLINE_COLOR, class_colors, fade, tint_instances


class BEVColumns(NamedTuple):
    """Per-column view of a (X, Y, Z) grid, all (X, Y) arrays."""
    top_k: np.ndarray       # int64 index of the top occupied voxel, -1 for an empty column
    top_class: np.ndarray   # int64 class of that voxel, ``free_class`` for an empty column
    top_instance: np.ndarray  # int64 instance id of that voxel, 0 for none / empty
    visible: np.ndarray     # bool: the column's top voxel (any voxel if empty) is visible


def _check_grid(name: str, arr: np.ndarray, shape=None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f'{name} must be a (X, Y, Z) voxel grid, got shape {arr.shape}')
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f'{name} has shape {arr.shape}, expected {tuple(shape)} like semantics')
    return arr


def bev_columns(semantics: np.ndarray, instances: Optional[np.ndarray] = None,
                visible: Optional[np.ndarray] = None, free_class: int = FREE_CLASS) -> BEVColumns:
    """Top occupied voxel of every column.

    Args:
        semantics: (X, Y, Z) int class ids; ``free_class`` and ids >= ``free_class`` are empty.
        instances: (X, Y, Z) int instance ids (0 = none), optional.
        visible: (X, Y, Z) bool voxels seen by the cameras (e.g. ``mask_camera & infov``),
            optional (all visible).
        free_class: the 'free' class id.
    """
    sem = _check_grid('semantics', semantics).astype(np.int64, copy=False)
    occupied = (sem >= 0) & (sem < free_class)
    num_z = sem.shape[2]
    any_occ = occupied.any(axis=2)
    # index of the last True along z: argmax over the reversed axis
    top_k = np.where(any_occ, num_z - 1 - np.argmax(occupied[:, :, ::-1], axis=2), -1)
    k_safe = np.maximum(top_k, 0)[..., None]
    top_class = np.where(any_occ, np.take_along_axis(sem, k_safe, axis=2)[..., 0], free_class)
    if instances is not None:
        inst = _check_grid('instances', instances, sem.shape).astype(np.int64, copy=False)
        top_inst = np.where(any_occ, np.take_along_axis(inst, k_safe, axis=2)[..., 0], 0)
    else:
        top_inst = np.zeros(sem.shape[:2], np.int64)
    if visible is not None:
        vis = _check_grid('visible mask', visible, sem.shape).astype(bool, copy=False)
        col_vis = np.where(any_occ, np.take_along_axis(vis, k_safe, axis=2)[..., 0],
                           vis.any(axis=2))
    else:
        col_vis = np.ones(sem.shape[:2], bool)
    return BEVColumns(top_k, top_class, top_inst, col_vis)


def grid_to_image(arr: np.ndarray, scale: int) -> np.ndarray:
    """(X, Y, ...) grid array -> (X * scale, Y * scale, ...) image array, forward up, left left."""
    img = arr[::-1, ::-1]
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(img)


def _instance_outline(inst_img: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of an instance (> 0) with a 4-neighbour of another id."""
    edge = np.zeros(inst_img.shape, bool)
    diff_v = inst_img[1:, :] != inst_img[:-1, :]
    diff_h = inst_img[:, 1:] != inst_img[:, :-1]
    edge[1:, :] |= diff_v
    edge[:-1, :] |= diff_v
    edge[:, 1:] |= diff_h
    edge[:, :-1] |= diff_h
    return edge & (inst_img > 0)


def draw_ego(img: np.ndarray, scale: int, voxel_size: float = VOXEL_SIZE,
             length_m: float = 4.8, width_m: float = 2.1) -> None:
    """Draw the ego vehicle (outlined box with a nose pointing forward) at the image centre."""
    cy, cx = img.shape[0] / 2.0, img.shape[1] / 2.0
    half_l = length_m / voxel_size * scale / 2.0
    half_w = width_m / voxel_size * scale / 2.0
    body = np.array([[cx - half_w, cy + half_l], [cx + half_w, cy + half_l],
                     [cx + half_w, cy - half_l * 0.6], [cx, cy - half_l],
                     [cx - half_w, cy - half_l * 0.6]])
    pts = np.round(body).astype(np.int32)
    cv2.fillPoly(img, [pts], (255, 255, 255), lineType=cv2.LINE_AA)
    cv2.polylines(img, [pts], True, (0, 0, 0), max(1, scale // 2), lineType=cv2.LINE_AA)


def draw_instance_ids(img: np.ndarray, top_instance: np.ndarray, scale: int,
                      font_scale: float = 0.35) -> None:
    """Write each instance id of the (X, Y) ``top_instance`` grid at the centre of its
    columns in the BEV image ``img`` (in place)."""
    ids, inverse, counts = np.unique(top_instance.ravel(), return_inverse=True,
                                     return_counts=True)
    num_x, num_y = top_instance.shape
    ii, jj = np.divmod(np.arange(top_instance.size), num_y)
    sum_r = np.bincount(inverse, weights=num_x - 1 - ii, minlength=ids.size)
    sum_c = np.bincount(inverse, weights=num_y - 1 - jj, minlength=ids.size)
    for n, iid in enumerate(ids):
        if iid <= 0:
            continue
        text = str(int(iid))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        row = (sum_r[n] / counts[n] + 0.5) * scale
        col = (sum_c[n] / counts[n] + 0.5) * scale
        org = (int(col - tw / 2), int(row + th / 2))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 3,
                    cv2.LINE_AA)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)


def render_bev(semantics: np.ndarray,
               instances: Optional[np.ndarray] = None,
               visible: Optional[np.ndarray] = None,
               *,
               free_class: int = FREE_CLASS,
               scale: int = 4,
               height_shading: float = 0.25,
               instance_tint: float = 0.55,
               invisible_fade: float = 0.55,
               outlines: bool = True,
               draw_ids: bool = True,
               ego: bool = True) -> np.ndarray:
    """Bird's-eye view of a voxel grid.

    Each column shows the class colour of its top occupied voxel, darkened with depth below the
    top of the grid (``height_shading`` = darkening of the lowest layer, 0 = flat colours).
    Voxels with an instance id get their class colour blended with the id's colour
    (``instance_tint``), a dark outline and their id written on top. Columns whose top voxel
    (or, if empty, every voxel) is outside ``visible`` fade towards light grey
    (``invisible_fade``) under a diagonal hatch.

    Args:
        semantics: (X, Y, Z) int class ids.
        instances: (X, Y, Z) int instance ids, optional.
        visible: (X, Y, Z) bool camera-visibility mask, optional.
        scale: pixels per voxel side.

    Returns:
        (X * scale, Y * scale, 3) uint8 RGB image.
    """
    cols = bev_columns(semantics, instances, visible, free_class)
    num_z = np.asarray(semantics).shape[2]
    palette = class_colors()
    occupied = cols.top_k >= 0
    rgb = np.empty(cols.top_class.shape + (3,), np.uint8)
    rgb[:] = EMPTY_COLOR
    rgb[occupied] = palette[np.clip(cols.top_class[occupied], 0, len(palette) - 1)]
    rgb = tint_instances(rgb, np.where(occupied, cols.top_instance, 0), instance_tint)
    factor = np.ones(cols.top_k.shape, np.float32)
    if height_shading > 0:
        layer = (cols.top_k[occupied] + 1).astype(np.float32) / num_z
        factor[occupied] = 1.0 - height_shading * (1.0 - layer)
    shaded = rgb.astype(np.float32) * factor[..., None]
    hidden = ~cols.visible
    if hidden.any() and invisible_fade > 0:
        shaded[hidden] = fade(shaded[hidden], invisible_fade)
    img = grid_to_image(np.clip(np.round(shaded), 0, 255).astype(np.uint8), scale)
    if hidden.any() and invisible_fade > 0:
        # diagonal hatch over the area the cameras do not see
        hidden_img = grid_to_image(hidden, scale)
        rr, cc = np.indices(hidden_img.shape)
        hatch = hidden_img & (((rr + cc) % 8) == 0)
        img[hatch] = (img[hatch] * 0.8).astype(np.uint8)
    top_instance = np.where(occupied, cols.top_instance, 0)
    if outlines:
        img[_instance_outline(grid_to_image(top_instance, scale))] = OUTLINE_COLOR
    if ego:
        draw_ego(img, scale)
    if draw_ids and scale >= 3:
        draw_instance_ids(img, top_instance, scale)
    return img
