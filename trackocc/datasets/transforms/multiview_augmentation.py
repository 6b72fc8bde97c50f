"""LSS-style image-view augmentation of the camera images (resize, crop, flip, rotate).

Port of the reference ``OccWaymoPrepareImageInputs`` augmentation: per camera, resize each
axis by ``input / source + u`` (``u ~ U(resize)`` drawn per axis, as the reference does),
crop an ``input_size`` window (random column, rows from ``crop_h``), optionally flip
horizontally and rotate by ``U(rot)`` degrees about the crop centre. The whole chain is one
affine map of pixel coordinates ``p' = R p + t``; the image is warped with exactly that map
(one interpolation, zero padding), so the matrices and the pixels agree. A strong downscale is
first done with area averaging (anti-aliasing), the warp corrected to keep the total map exact.

Pixel convention (as the reference's PIL ops and the synthetic renderer): pixel ``(i, j)``
covers ``[i, i + 1) x [j, j + 1)``, its centre is ``(i + 0.5, j + 0.5)``.

``img_aug_matrix`` holds the map as a 4x4 acting on ``(u*d, v*d, d, 1)``: ``R`` in
``[:2, :2]``, ``t`` in ``[:2, 2]``; hence ``lidar2img = img_aug_matrix @ cam2img @ lidar2cam``
projects ego points to augmented pixels (divide by the third row). The LSS view transformer's
``post_rot``/``post_tran`` are ``R`` and ``t``.

Random parameters of all cameras are drawn in one ``@cache_randomness`` call, so inside
``TransformBroadcaster(share_random_params=True)`` every frame of a clip gets the same
augmentation (cameras still differ from each other, as in the reference).
"""
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet3d.registry import TRANSFORMS

_INTERPOLATION = dict(nearest=cv2.INTER_NEAREST, bilinear=cv2.INTER_LINEAR,
                      bicubic=cv2.INTER_CUBIC)


def rotation_2d(degrees: float) -> np.ndarray:
    """Pixel-plane rotation (v axis down) that turns the image counter-clockwise on screen."""
    h = np.deg2rad(degrees)
    return np.array([[np.cos(h), np.sin(h)], [-np.sin(h), np.cos(h)]])


def aug_params_to_affine(resize: Sequence[float], crop: Sequence[int], flip: bool,
                         rotate: float) -> Tuple[np.ndarray, np.ndarray]:
    """Compose resize -> crop -> flip -> rotate into ``p' = R @ p + t`` (pixel coords).

    Args:
        resize: (scale_w, scale_h); crop: (x0, y0, x1, y1) in resized pixels; flip: mirror
        the crop horizontally; rotate: degrees about the crop centre.
    Returns: R (2, 2), t (2,) float64.
    """
    rot = np.diag([float(resize[0]), float(resize[1])])
    tran = -np.asarray(crop[:2], dtype=np.float64)
    width, height = crop[2] - crop[0], crop[3] - crop[1]
    if flip:
        mirror = np.array([[-1., 0.], [0., 1.]])
        rot = mirror @ rot
        tran = mirror @ tran + np.array([width, 0.])
    spin = rotation_2d(rotate)
    centre = np.array([width, height], dtype=np.float64) / 2
    rot = spin @ rot
    tran = spin @ tran + centre - spin @ centre
    return rot, tran


@TRANSFORMS.register_module()
class MultiViewImageAugmentation(BaseTransform):
    """Resize/crop/flip/rotate every camera image to ``data_config['input_size']``.

    Required keys: ``img`` (list of (H_i, W_i, 3) uint8), ``cam2img``, ``lidar2cam``,
    ``img_aug_matrix`` (original -> current pixels, e.g. a reduced decoding), ``ori_shape``.
    Parameters are drawn for the original image size and the result maps original pixels
    (any earlier image-space map is undone in the warp).
    Modified keys: ``img`` (list of (H, W, 3) uint8, H, W = input_size), ``img_shape`` (H, W),
    ``img_aug_matrix`` (N, 4, 4), ``lidar2img`` (N, 4, 4).
    Added: ``img_aug_params`` (per camera dict(resize, crop, flip, rotate)).

    Args:
        data_config (dict): as the reference config: ``input_size`` (H, W), ``resize``
            (low, high) added to the per-axis scale, ``rot`` (low, high) degrees, ``flip`` bool,
            ``crop_h`` (low, high) fraction of the resized height left below the crop,
            ``resize_test`` scale offset at test time.
        is_train (bool): Draw random parameters; else the deterministic test transform
            (scale input/source, bottom rows, centred columns, no flip or rotation).
        interpolation (str): 'bilinear' (default), 'nearest' or 'bicubic'.
    """

    def __init__(self, data_config: dict, is_train: bool = False,
                 interpolation: str = 'bilinear') -> None:
        if 'input_size' not in data_config:
            raise KeyError('MultiViewImageAugmentation: data_config needs input_size (H, W)')
        if interpolation not in _INTERPOLATION:
            raise ValueError(f'interpolation must be one of {sorted(_INTERPOLATION)}')
        self.data_config = dict(data_config)
        self.input_size = tuple(int(x) for x in data_config['input_size'])
        self.is_train = is_train
        self.interpolation = interpolation

    def _params_one(self, height: int, width: int, rng) -> dict:
        cfg = self.data_config
        out_h, out_w = self.input_size
        if rng is not None:
            scale_w = out_w / width + rng.uniform(*cfg.get('resize', (0., 0.)))
            scale_h = out_h / height + rng.uniform(*cfg.get('resize', (0., 0.)))
            crop_frac = rng.uniform(*cfg.get('crop_h', (0., 0.)))
        else:
            scale_w = out_w / width + cfg.get('resize_test', 0.)
            scale_h = out_h / height + cfg.get('resize_test', 0.)
            crop_frac = float(np.mean(cfg.get('crop_h', (0., 0.))))
        new_w, new_h = int(width * scale_w), int(height * scale_h)
        crop_y = int((1 - crop_frac) * new_h) - out_h
        if rng is not None:
            crop_x = int(rng.uniform(0, max(0, new_w - out_w)))
            flip = bool(cfg.get('flip', False)) and bool(rng.choice([0, 1]))
            rotate = float(rng.uniform(*cfg.get('rot', (0., 0.))))
        else:
            crop_x, flip, rotate = int(max(0, new_w - out_w) / 2), False, 0.
        return dict(resize=(scale_w, scale_h), crop=(crop_x, crop_y, crop_x + out_w,
                                                     crop_y + out_h), flip=flip, rotate=rotate)

    @cache_randomness
    def sample_params(self, shapes: Sequence[Tuple[int, int]]) -> List[dict]:
        """Random parameters for all cameras at once (cached per clip when broadcast)."""
        return [self._params_one(h, w, np.random) for h, w in shapes]

    def _warp(self, img: np.ndarray, rot: np.ndarray, tran: np.ndarray) -> np.ndarray:
        """Apply ``p' = rot @ p + tran`` to ``img`` into an ``input_size`` canvas."""
        height, width = img.shape[:2]
        scale = np.minimum(np.linalg.norm(rot, axis=0), 1.0)  # per-axis scale of the map
        if scale.min() < 0.75:  # area-average down to about the target scale first
            new_w = max(1, int(round(width * scale[0])))
            new_h = max(1, int(round(height * scale[1])))
            img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
            # in corner coordinates cv2.resize is the pure scale u -> s * u
            rot = rot @ np.diag([width / new_w, height / new_h])
        out_h, out_w = self.input_size
        # pixel index i holds corner coordinate i + 0.5: conjugate the map into index space
        warp = np.concatenate([rot, (tran + rot @ [0.5, 0.5] - 0.5)[:, None]], axis=1)
        return cv2.warpAffine(img, warp, (out_w, out_h), flags=_INTERPOLATION[self.interpolation],
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def transform(self, results: dict) -> dict:
        shapes = [tuple(shape[:2]) for shape in
                  results.get('ori_shape') or [img.shape[:2] for img in results['img']]]
        if self.is_train:
            params = self.sample_params(shapes)
            if len(params) != len(shapes):
                raise ValueError(f'{type(self).__name__}: the frames of one clip have different '
                                 f'numbers of cameras ({len(params)} vs {len(shapes)})')
        else:
            params = [self._params_one(h, w, None) for h, w in shapes]
        out_h, out_w = self.input_size
        imgs, aug_mats = [], []
        for img, prm, pre in zip(results['img'], params, results['img_aug_matrix']):
            rot, tran = aug_params_to_affine(prm['resize'], prm['crop'], prm['flip'],
                                             prm['rotate'])
            # the image may already be mapped (e.g. reduced decoding): warp it by A @ pre^-1
            pre_inv = np.linalg.inv(pre[:2, :2])
            imgs.append(self._warp(img, rot @ pre_inv, tran - rot @ pre_inv @ pre[:2, 2]))
            mat = np.eye(4)
            mat[:2, :2], mat[:2, 2] = rot, tran
            aug_mats.append(mat)
        aug = np.stack(aug_mats)
        results['img'] = imgs
        results['img_shape'] = (out_h, out_w)
        results['img_aug_matrix'] = aug
        results['lidar2img'] = aug @ results['cam2img'] @ results['lidar2cam']
        results['img_aug_params'] = params
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(data_config={self.data_config}, '
                f'is_train={self.is_train}, interpolation={self.interpolation})')
