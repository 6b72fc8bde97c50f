"""Composing render panels into one figure: titles, grids of panels, legend, camera strip.

All images are (H, W, 3) uint8 RGB numpy arrays; text is drawn with OpenCV's Hershey font so
composing a figure costs milliseconds (no matplotlib).
"""
import io
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from ..structures.cameras import SPATIAL_CAMERA_ORDER

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (20, 20, 20)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def blank(height: int, width: int, color=BACKGROUND) -> np.ndarray:
    img = np.empty((max(int(height), 0), max(int(width), 0), 3), np.uint8)
    img[:] = np.asarray(color, np.uint8)
    return img


def put_text(img: np.ndarray, text: str, org: Tuple[int, int], font_scale: float = 0.5,
             color=TEXT_COLOR, thickness: int = 1) -> None:
    """Draw ``text`` with its baseline-left corner at ``org`` (x, y), in place."""
    cv2.putText(img, text, (int(org[0]), int(org[1])), FONT, font_scale, color, thickness,
                cv2.LINE_AA)


def text_size(text: str, font_scale: float = 0.5, thickness: int = 1) -> Tuple[int, int]:
    (width, height), baseline = cv2.getTextSize(text, FONT, font_scale, thickness)
    return width, height + baseline


def with_title(img: np.ndarray, title: str, font_scale: float = 0.6, thickness: int = 1,
               pad: int = 8) -> np.ndarray:
    """``img`` with a white bar holding ``title`` (centred) above it."""
    width, height = text_size(title, font_scale, thickness)
    bar = blank(height + 2 * pad, img.shape[1])
    put_text(bar, title, ((img.shape[1] - width) // 2, pad + height - 4), font_scale,
             thickness=thickness)
    return np.concatenate([bar, img], axis=0)


def stack(images: Sequence[np.ndarray], axis: int, gap: int = 8,
          align: str = 'start') -> np.ndarray:
    """Stack images horizontally (``axis=1``) or vertically (``axis=0``) on white, padding
    the other dimension to the largest image (``align`` 'start' or 'center')."""
    images = [img for img in images if img is not None and img.size]
    if not images:
        return blank(1, 1)
    other = 1 - axis
    size = max(img.shape[other] for img in images)
    parts = []
    for n, img in enumerate(images):
        missing = size - img.shape[other]
        before = missing // 2 if align == 'center' else 0
        if missing:
            shape = list(img.shape)
            shape[other] = size
            padded = blank(shape[0], shape[1])
            index = [slice(None), slice(None)]
            index[other] = slice(before, before + img.shape[other])
            padded[tuple(index)] = img
            img = padded
        if n and gap:
            gap_shape = [size, size]
            gap_shape[axis] = gap
            parts.append(blank(*gap_shape))
        parts.append(img)
    return np.concatenate(parts, axis=axis)


def fit_width(img: np.ndarray, width: int) -> np.ndarray:
    """Resize ``img`` to ``width`` keeping its aspect ratio (area filter when shrinking)."""
    if img.shape[1] == width:
        return img
    height = max(1, int(round(img.shape[0] * width / img.shape[1])))
    interp = cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (int(width), height), interpolation=interp)


def legend_panel(names: Sequence[str], colors: np.ndarray, notes: Sequence[str] = (),
                 swatch: int = 16, font_scale: float = 0.45, width: Optional[int] = None
                 ) -> np.ndarray:
    """A column of colour swatches with class names, then free-text ``notes`` lines."""
    line = swatch + 6
    text_w = max([text_size(n, font_scale)[0] for n in list(names) + list(notes)] + [0])
    width = width or (swatch + 18 + text_w)
    title_h = 26
    img = blank(title_h + line * len(names) + (line * (len(notes) + 1) if notes else 0) + 6,
                width)
    put_text(img, 'classes', (6, 18), 0.55, thickness=1)
    for n, (name, color) in enumerate(zip(names, colors)):
        top = title_h + n * line
        cv2.rectangle(img, (6, top), (6 + swatch, top + swatch),
                      tuple(int(c) for c in color), -1)
        cv2.rectangle(img, (6, top), (6 + swatch, top + swatch), (90, 90, 90), 1)
        put_text(img, name, (12 + swatch, top + swatch - 3), font_scale)
    top = title_h + len(names) * line + line // 2
    for n, note in enumerate(notes):
        put_text(img, note, (6, top + (n + 1) * line - 6), font_scale * 0.9, (70, 70, 70))
    return img


def read_camera_image(path: str, max_size: Tuple[int, int], backend_args=None) -> np.ndarray:
    """RGB image at ``path`` decoded at reduced size (JPEG draft mode) to fit ``max_size``
    (W, H). Raises ``FileNotFoundError``/``OSError`` with the path for missing or bad files."""
    from mmengine.fileio import get
    from PIL import Image
    try:
        data = get(path, backend_args=backend_args)
    except FileNotFoundError:
        raise FileNotFoundError(f'camera image {path} not found') from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft('RGB', (int(max_size[0]), int(max_size[1])))
            img = np.asarray(im.convert('RGB'))
    except OSError as err:
        raise OSError(f'camera image {path} cannot be decoded: {err}') from None
    return img


def camera_strip(images: Sequence[np.ndarray], names: Sequence[str], width: int,
                 gap: int = 4, font_scale: float = 0.45) -> np.ndarray:
    """Cameras side by side in the vehicle's left-to-right order, the row ``width`` wide.

    Each image is scaled to the same width (``(width - gaps) / N``) and labelled with its
    camera name; shorter images (side cameras) are bottom-aligned as in Waymo's rig.
    """
    order = sorted(range(len(images)),
                   key=lambda n: (SPATIAL_CAMERA_ORDER.index(names[n])
                                  if names[n] in SPATIAL_CAMERA_ORDER else len(names) + n))
    cell_w = (width - gap * (len(images) - 1)) // max(len(images), 1)
    cells = []
    for n in order:
        cell = fit_width(images[n], cell_w).copy()
        label = names[n]
        tw, th = text_size(label, font_scale)
        cv2.rectangle(cell, (0, 0), (tw + 8, th + 6), (255, 255, 255), -1)
        put_text(cell, label, (4, th + 1), font_scale)
        cells.append(cell)
    height = max(c.shape[0] for c in cells)
    cells = [np.concatenate([blank(height - c.shape[0], c.shape[1]), c], axis=0)
             for c in cells]
    return stack(cells, axis=1, gap=gap)
