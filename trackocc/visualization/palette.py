"""Colours of the occupancy renders: one RGB colour per class, one per instance / track id.

The class table and its colours are :mod:`trackocc.structures.occ_classes`' (shared with the
synthetic generator), so a rendered camera image and a voxel render of the same scene use the
same colours.

Instance colours come from a hash of the id, not from the order in which ids appear: the same
track id gets the same colour in every frame, every sequence and every process.
"""
from typing import Tuple

import numpy as np

from ..structures.occ_classes import CLASS_COLORS, OCC_CLASS_NAMES, THING_CLASSES

#: background of a column without any occupied voxel (light grey, apart from every class)
EMPTY_COLOR = np.array((250, 250, 250), dtype=np.uint8)
#: colour of instance outlines in the bird's-eye view
OUTLINE_COLOR = np.array((20, 20, 20), dtype=np.uint8)
#: what voxels outside the camera-visibility mask fade towards
FADE_COLOR = np.array((230, 230, 230), dtype=np.float32)


def class_names() -> Tuple[str, ...]:
    """The 16 occupancy class names, index = class id (the last one, 'free', is never drawn)."""
    return OCC_CLASS_NAMES


def class_colors() -> np.ndarray:
    """(16, 3) uint8 RGB colour of every class id (row 15, free, is unused)."""
    return np.clip(np.round(CLASS_COLORS), 0, 255).astype(np.uint8)


def thing_classes() -> Tuple[int, ...]:
    """Class ids tracked with persistent instance ids (vehicle, pedestrian, cyclist)."""
    return THING_CLASSES


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread uint64 hash of each integer (vectorised)."""
    with np.errstate(over='ignore'):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def instance_colors(ids) -> np.ndarray:
    """Stable RGB colour of each instance / track id.

    Args:
        ids: int array of any shape (negative ids are hashed as their uint64 wrap-around).

    Returns:
        uint8 array ``ids.shape + (3,)``: saturated, medium-bright colours (hue from the hash,
        saturation 0.65-1, value 0.75-1), deterministic across frames and processes.
    """
    ids = np.asarray(ids).astype(np.int64)
    h = _mix64(ids.view(np.uint64))
    hue = (h & np.uint64(0xFFFF)).astype(np.float64) / 65536.0
    sat = 0.65 + 0.35 * ((h >> np.uint64(16)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    val = 0.75 + 0.25 * ((h >> np.uint64(24)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    # HSV -> RGB, vectorised
    sector = np.floor(hue * 6.0)
    frac = hue * 6.0 - sector
    p = val * (1.0 - sat)
    q = val * (1.0 - sat * frac)
    t = val * (1.0 - sat * (1.0 - frac))
    sector = sector.astype(np.int64) % 6
    choices = [np.stack(c, axis=-1) for c in
               ((val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q))]
    rgb = np.choose(sector[..., None], choices)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def tint_instances(rgb: np.ndarray, instances: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """Blend the colour of every element with an instance id (> 0) towards its id's colour.

    Args:
        rgb: (..., 3) uint8 class colours.
        instances: (...) int instance ids, 0 = none.
        strength: 0 keeps the class colour, 1 uses the instance colour alone.

    Returns:
        (..., 3) uint8, a new array.
    """
    out = np.array(rgb, dtype=np.uint8, copy=True)
    has = np.asarray(instances) > 0
    if strength > 0 and has.any():
        inst_rgb = instance_colors(np.asarray(instances)[has]).astype(np.float32)
        mixed = (1.0 - strength) * out[has].astype(np.float32) + strength * inst_rgb
        out[has] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
    return out


def fade(rgb: np.ndarray, amount) -> np.ndarray:
    """Blend colours towards :data:`FADE_COLOR` (``amount`` 0 = unchanged, 1 = fade colour);
    used for voxels the cameras do not see. ``amount`` is a scalar or broadcasts to
    ``rgb.shape[:-1]``. Returns float32 RGB."""
    amount = np.asarray(amount, np.float32)[..., None]
    return (1.0 - amount) * np.asarray(rgb, np.float32) + amount * FADE_COLOR
