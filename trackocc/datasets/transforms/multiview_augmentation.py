"""LSS-style image-view augmentation of the camera images (resize, crop, flip, rotate).

Port of the reference ``OccWaymoPrepareImageInputs`` augmentation: per camera, resize each
axis by ``input / source + u`` (``u ~ U(resize)`` drawn per axis, as the reference does),
crop an ``input_size`` window (random column, rows from ``crop_h``), optionally flip
horizontally and rotate by ``U(rot)`` degrees about the crop centre. The chain is one affine
map of pixel coordinates ``p' = R p + t`` (``aug_params_to_affine``).

When the parameters are drawn (``draw``), training only; testing is deterministic:

* ``'per_camera_per_frame'`` (reference): every camera of every frame draws its own
  parameters (the reference calls ``sample_augmentation`` per camera in each frame's pipeline
  run), from numpy's global generator in the reference's order.
* ``'per_clip'``: the draws of all cameras are one ``@cache_randomness`` call, so inside
  ``TransformBroadcaster(share_random_params=True)`` all frames of a clip share them (cameras
  still differ from each other).

How the pixels are resampled (``resample``):

* ``'pil_bicubic'`` (reference): Pillow's bicubic resize to the integer size, crop, mirror,
  nearest-neighbour rotation, on the full-resolution image (``pil_augmentation.py``).
* ``'warp'``: one ``cv2.warpAffine`` with exactly ``(R, t)`` (zero padding), after an
  area-averaging downscale when the map shrinks strongly; accepts images that are already
  mapped (e.g. a reduced JPEG decode), the warp undoing that map. Faster, and the pixels follow
  the matrices exactly (the reference's resize uses the truncated integer size, its matrix the
  drawn scale: < 1 pixel apart at the far edge).

Pixel convention (as the reference's PIL ops and the synthetic renderer): pixel ``(i, j)``
covers ``[i, i + 1) x [j, j + 1)``, its centre is ``(i + 0.5, j + 0.5)``.

``img_aug_matrix`` holds the map as a 4x4 acting on ``(u*d, v*d, d, 1)``: ``R`` in
``[:2, :2]``, ``t`` in ``[:2, 2]``; hence ``lidar2img = img_aug_matrix @ cam2img @ lidar2cam``
projects ego points to augmented pixels (divide by the third row). The LSS view transformer's
``post_rot``/``post_tran`` are ``R`` and ``t``.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from trackocc.registry import TRANSFORMS

from .pil_augmentation import pil_resize_crop_flip_rotate

_INTERPOLATION = dict(nearest=cv2.INTER_NEAREST, bilinear=cv2.INTER_LINEAR,
                      bicubic=cv2.INTER_CUBIC)
DRAWS = ('per_camera_per_frame', 'per_clip')
RESAMPLES = ('pil_bicubic', 'warp')


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
    Parameters are drawn for the original image size and the result maps original pixels.
    Modified keys: ``img`` (list of (H, W, 3) uint8, H, W = input_size), ``img_shape`` (H, W),
    ``img_aug_matrix`` (N, 4, 4), ``lidar2img`` (N, 4, 4).
    Added: ``img_aug_params`` (per camera dict(resize, resize_dims, crop, flip, rotate)).

    Args:
        data_config (dict): as the reference config: ``input_size`` (H, W), ``resize``
            (low, high) added to the per-axis scale, ``rot`` (low, high) degrees, ``flip`` bool,
            ``crop_h`` (low, high) fraction of the resized height left below the crop,
            ``resize_test`` scale offset at test time.
        is_train (bool): Draw random parameters; else the deterministic test transform
            (scale input/source, bottom rows, centred columns, no flip or rotation).
        draw (str): 'per_camera_per_frame' (default, the reference) or 'per_clip' (see the
            module docstring).
        resample (str): 'pil_bicubic' (default, the reference; needs full-resolution images)
            or 'warp'.
        interpolation (str, optional): the warp's filter, 'bilinear' (default), 'nearest' or
            'bicubic'; only with ``resample='warp'``.
    """

    def __init__(self, data_config: dict, is_train: bool = False,
                 draw: str = 'per_camera_per_frame', resample: str = 'pil_bicubic',
                 interpolation: Optional[str] = None) -> None:
        name = type(self).__name__
        if 'input_size' not in data_config:
            raise KeyError(f'{name}: data_config needs input_size (H, W)')
        if draw not in DRAWS:
            raise ValueError(f'{name}: draw must be one of {DRAWS}, got {draw!r}')
        if resample not in RESAMPLES:
            raise ValueError(f'{name}: resample must be one of {RESAMPLES}, got {resample!r}')
        if interpolation is not None and resample != 'warp':
            raise ValueError(f'{name}: interpolation={interpolation!r} applies to '
                             f'resample="warp" only ({resample!r} is the reference\'s bicubic '
                             'resize and nearest-neighbour rotation)')
        interpolation = interpolation or 'bilinear'
        if interpolation not in _INTERPOLATION:
            raise ValueError(f'{name}: interpolation must be one of {sorted(_INTERPOLATION)}')
        self.data_config = dict(data_config)
        self.input_size = tuple(int(x) for x in data_config['input_size'])
        self.is_train = is_train
        self.draw = draw
        self.resample = resample
        self.interpolation = interpolation

    def _params_one(self, height: int, width: int, rng) -> dict:
        """One camera's parameters; ``rng`` (numpy's global generator) draws them in the
        reference's order, ``None`` gives the test-time ones."""
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
        return dict(resize=(float(scale_w), float(scale_h)), resize_dims=(new_w, new_h),
                    crop=(crop_x, crop_y, crop_x + out_w, crop_y + out_h), flip=flip,
                    rotate=rotate)

    def draw_params(self, shapes: Sequence[Tuple[int, int]]) -> List[dict]:
        """Fresh random parameters for the cameras of one frame, camera after camera."""
        return [self._params_one(h, w, np.random) for h, w in shapes]

    @cache_randomness
    def sample_params(self, shapes: Sequence[Tuple[int, int]]) -> List[dict]:
        """``draw_params``, cached for all frames of a clip inside a broadcaster."""
        return self.draw_params(shapes)

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

    def _check_full_resolution(self, results: dict, index: int, img: np.ndarray,
                               pre: np.ndarray, shape: Tuple[int, int]) -> None:
        if np.allclose(pre, np.eye(4), rtol=0, atol=1e-12) and tuple(img.shape[:2]) == shape:
            return
        cams = results.get('cam_names') or []
        cam = cams[index] if index < len(cams) else f'camera {index}'
        raise ValueError(
            f'{type(self).__name__}: {cam} of sample {results.get("sample_idx")} arrives '
            f'resampled ({img.shape[:2]} pixels of an original {shape}, img_aug_matrix '
            f'{np.round(pre[:2, :3], 6).tolist()}); resample="pil_bicubic" reproduces the '
            'reference on the full-resolution image: load it with decode_reduce=1, or use '
            'resample="warp"')

    def transform(self, results: dict) -> dict:
        shapes = [tuple(shape[:2]) for shape in
                  results.get('ori_shape') or [img.shape[:2] for img in results['img']]]
        if self.is_train and self.draw == 'per_clip':
            params = self.sample_params(shapes)
            if len(params) != len(shapes):
                raise ValueError(f'{type(self).__name__}: the frames of one clip have different '
                                 f'numbers of cameras ({len(params)} vs {len(shapes)})')
        elif self.is_train:
            params = self.draw_params(shapes)
        else:
            params = [self._params_one(h, w, None) for h, w in shapes]
        out_h, out_w = self.input_size
        imgs, aug_mats = [], []
        for i, (img, prm, pre) in enumerate(zip(results['img'], params,
                                                results['img_aug_matrix'])):
            rot, tran = aug_params_to_affine(prm['resize'], prm['crop'], prm['flip'],
                                             prm['rotate'])
            if self.resample == 'pil_bicubic':
                self._check_full_resolution(results, i, img, pre, shapes[i])
                imgs.append(pil_resize_crop_flip_rotate(img, prm['resize_dims'], prm['crop'],
                                                        prm['flip'], prm['rotate']))
            else:
                # the image may already be mapped (e.g. reduced decoding): warp by A @ pre^-1
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
                f'is_train={self.is_train}, draw={self.draw}, resample={self.resample}, '
                f'interpolation={self.interpolation})')
