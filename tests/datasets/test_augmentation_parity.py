"""Image augmentation against the original TrackOcc's own output.

tests/data/original_image_augmentation.npz was written by the original's
``OccWaymoPrepareImageInputs`` in the reference environment
(tools/parity/dump_original_augmentation.py, Pillow 10.4). Pixels must be equal: Pillow's
uint8 bicubic resize is fixed-point integer arithmetic and crop / mirror / nearest rotation
copy pixels, so the result does not depend on the CPU (Pillow 8.4, 9.5, 10.4 and 13.0 give the
same bytes). The original composed its matrices in float32, hence the 1e-5 on those.
"""
import os.path as osp

import numpy as np
import pytest

from trackocc.datasets.transforms import (MultiViewImageAugmentation, aug_params_to_affine,
                                          pil_resize_crop_flip_rotate)

FIXTURE = osp.join(osp.dirname(osp.dirname(__file__)), 'data',
                   'original_image_augmentation.npz')


@pytest.fixture(scope='module')
def ref():
    with np.load(FIXTURE) as data:
        out = {k: data[k] for k in data.files}
    rows = out['side_rows']
    out['sources'] = [out['src_front'], out['src_front'][rows[0]:rows[1]]]
    return out


def _unpack(row):
    """(resize_w, resize_h, dims_w, dims_h, x0, y0, x1, y1, flip, rotate) -> parameters."""
    return ((row[0], row[1]), tuple(int(v) for v in row[2:4]), tuple(int(v) for v in row[4:8]),
            bool(row[8]), float(row[9]))


def test_pil_ops_reproduce_the_original_pixels_and_matrices(ref):
    assert len(ref['fixed_params']) >= 6
    for k, row in enumerate(ref['fixed_params']):
        resize, dims, crop, flip, rotate = _unpack(row)
        img = ref['sources'][ref['fixed_source'][k]]
        got = pil_resize_crop_flip_rotate(img, dims, crop, flip, rotate)
        np.testing.assert_array_equal(got, ref['fixed_img'][k], err_msg=f'case {k}')
        rot, tran = aug_params_to_affine(resize, crop, flip, rotate)
        np.testing.assert_allclose(rot, ref['fixed_post_rot'][k], rtol=0, atol=1e-5)
        np.testing.assert_allclose(tran, ref['fixed_post_tran'][k], rtol=0, atol=1e-5)


def test_transform_draws_and_resamples_as_the_original(ref):
    """Seeded numpy: two training frames in a row, then a test frame, five cameras each."""
    cfg = dict(input_size=tuple(int(v) for v in ref['input_size']),
               resize=tuple(ref['ranges_resize']), rot=tuple(ref['ranges_rot']),
               flip=bool(ref['ranges_flip']), crop_h=tuple(ref['ranges_crop_h']),
               resize_test=float(ref['ranges_resize_test']))
    front, side = ref['sources']
    eye = np.tile(np.eye(4), (5, 1, 1))
    np.random.seed(int(ref['seed']))
    for f, is_train in enumerate(ref['drawn_is_train']):
        aug = MultiViewImageAugmentation(cfg, is_train=bool(is_train))  # defaults: reference
        res = aug(dict(img=[front] * 3 + [side] * 2, cam2img=eye, lidar2cam=eye,
                       img_aug_matrix=eye, ori_shape=[front.shape[:2]] * 3 + [side.shape[:2]] * 2))
        got = [[*p['resize'], *p['resize_dims'], *p['crop'], float(p['flip']), p['rotate']]
               for p in res['img_aug_params']]
        np.testing.assert_array_equal(np.array(got), ref['drawn_params'][f])
        np.testing.assert_array_equal(np.stack(res['img']), ref['drawn_img'][f])
        np.testing.assert_allclose(res['img_aug_matrix'][:, :2, :2], ref['drawn_post_rot'][f],
                                   rtol=0, atol=1e-5)
        np.testing.assert_allclose(res['img_aug_matrix'][:, :2, 2], ref['drawn_post_tran'][f],
                                   rtol=0, atol=1e-5)
    # the two training frames drew different parameters (per frame, not per clip)
    assert not np.array_equal(ref['drawn_params'][0], ref['drawn_params'][1])

