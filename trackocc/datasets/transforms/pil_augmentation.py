"""The reference's image augmentation as its sequence of Pillow operations.

The original TrackOcc (``OccWaymoPrepareImageInputs.img_transform_core``) augments each
camera image as a PIL image: ``resize`` to integer ``resize_dims`` with Pillow's default
filter for RGB images (bicubic with a support widened by the downscale factor, i.e.
antialiased), ``crop`` an integer box (outside the image: zeros), optional left-right
mirror, then ``rotate`` by degrees about the centre of the crop with Pillow's default
nearest-neighbour sampling and black fill. Every step after the resize copies pixels, so the
result is that of Pillow's bicubic resampler on uint8 data.

Pixel grid (Pillow's): pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``. The resize maps
``u -> u * resize_dims / size`` exactly, whereas the reference's ``post_rot`` uses the drawn
(untruncated) scale: the two differ by less than one resized pixel at the far image edge.
"""
from typing import Sequence

import numpy as np
from PIL import Image


def pil_resize_crop_flip_rotate(img: np.ndarray, resize_dims: Sequence[int],
                                crop: Sequence[int], flip: bool, rotate: float) -> np.ndarray:
    """Resize -> crop -> flip -> rotate ``img`` with Pillow, as the reference did.

    Args:
        img: (H, W, 3) uint8 image (channel order is kept; the ops act per channel).
        resize_dims: (width, height) after the resize.
        crop: (x0, y0, x1, y1) box in resized pixels (may reach outside: zero padding).
        flip: mirror left-right after the crop.
        rotate: degrees, counter-clockwise on screen, about the crop centre.
    Returns: (y1 - y0, x1 - x0, 3) uint8.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'pil_resize_crop_flip_rotate: needs an (H, W, 3) uint8 image, got '
                         f'{img.dtype} {img.shape}')
    pil = Image.fromarray(np.ascontiguousarray(img))
    pil = pil.resize((int(resize_dims[0]), int(resize_dims[1])), Image.Resampling.BICUBIC)
    pil = pil.crop(tuple(int(c) for c in crop))
    if flip:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pil = pil.rotate(float(rotate), resample=Image.Resampling.NEAREST)
    return np.asarray(pil)
