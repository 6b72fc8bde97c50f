"""Truncated or damaged JPEGs are errors naming the file: decoder, loading transform, checker."""
import multiprocessing as mp
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest

from trackocc.datasets.data_checker import DataFileError, check_data_root, read_image
from trackocc.datasets.image_integrity import (CorruptImageError, decode_checked,
                                               jpeg_structure_problem)
from trackocc.datasets.transforms import LoadMultiViewImages
from trackocc.structures import CAMERA_FOLDERS, CAMERA_NAMES as CAMS


def cv2_decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def textured_jpeg(width=96, height=64):
    rng = np.random.default_rng(3)
    img = (rng.random((height, width, 3)) * 90 + np.linspace(0, 160, width)[None, :, None])
    return cv2.imencode('.jpg', img.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def zero_middle(data):
    n = len(data)
    return data[:n // 3] + bytes(2 * n // 3 - n // 3) + data[2 * n // 3:]


def test_decode_checked_refuses_truncated_and_damaged_jpegs():
    good = textured_jpeg()
    assert jpeg_structure_problem(good) is None
    assert jpeg_structure_problem(good + b'\x00' * 7) is None  # zero padding is allowed
    np.testing.assert_array_equal(decode_checked(cv2_decode, good), cv2_decode(good))
    with pytest.raises(CorruptImageError, match='no EOI marker'):
        decode_checked(cv2_decode, good[:len(good) // 2])
    png = cv2.imencode('.png', cv2_decode(good))[1].tobytes()
    assert 'no SOI marker' in jpeg_structure_problem(png)
    assert decode_checked(cv2_decode, png).shape == (64, 96, 3)  # other formats: no marker test
    # markers intact, entropy-coded data zeroed: only libjpeg's warning tells
    assert cv2_decode(zero_middle(good)) is not None  # what plain cv2 accepts
    with pytest.raises(CorruptImageError, match='Corrupt JPEG data'):
        decode_checked(cv2_decode, zero_middle(good))
    # truncated, then an end marker appended by hand
    with pytest.raises(CorruptImageError, match='Corrupt JPEG data'):
        decode_checked(cv2_decode, good[:len(good) // 2] + b'\xff\xd9')
    # the capture is left clean: a good image decodes again
    assert decode_checked(cv2_decode, good).shape == (64, 96, 3)


def test_other_decoder_output_is_passed_through(capfd):
    def noisy(data):
        os.write(2, b'libpng warning: iCCP: known incorrect sRGB profile\n')
        return cv2_decode(data)
    assert decode_checked(noisy, textured_jpeg()).shape == (64, 96, 3)
    assert 'libpng warning: iCCP' in capfd.readouterr().err

    def failing(data):
        os.write(2, b'decoder noise\n')
        raise RuntimeError('boom')
    with pytest.raises(RuntimeError, match='boom'):
        decode_checked(failing, textured_jpeg())
    assert 'decoder noise' in capfd.readouterr().err


def _decode_in_child(data):
    try:
        decode_checked(cv2_decode, data)
    except CorruptImageError as err:
        return err.reason
    return 'ok'


def test_capture_works_in_forked_workers():
    good = textured_jpeg()
    decode_checked(cv2_decode, good)  # the parent's capture file exists before the fork
    with mp.get_context('fork').Pool(1) as pool:
        out = pool.map(_decode_in_child, [zero_middle(good), good])
    assert out[0].startswith('corrupt image data') and out[1] == 'ok'
    assert decode_checked(cv2_decode, good).shape == (64, 96, 3)


@pytest.fixture
def root(tiny_data_root, tmp_path):
    dst = str(tmp_path / 'data')
    shutil.copytree(tiny_data_root, dst)
    return dst


def _frame(root, sample_idx):
    return dict(sample_idx=sample_idx, images={
        cam: dict(img_path=osp.join(root, 'kitti_format', 'training', CAMERA_FOLDERS[cam],
                                    f'{sample_idx:07d}.jpg'),
                  cam2img=np.eye(3).tolist(), lidar2cam=np.eye(4).tolist())
        for cam in CAMS})


@pytest.mark.parametrize('reduce', [1, 2])
def test_loading_transform_names_the_corrupt_image(root, reduce):
    load = LoadMultiViewImages(cams=CAMS, decode_reduce=reduce)
    assert len(load(_frame(root, 1))['img']) == 5
    path = osp.join(root, 'kitti_format', 'training', 'image_2', '0000001.jpg')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(zero_middle(data))
    with pytest.raises(ValueError, match=r'CAM_FRONT_RIGHT image .*0000001\.jpg .* is corrupt: '
                                         'corrupt image data.*Corrupt JPEG data'):
        load(_frame(root, 1))
    with open(path, 'wb') as f:
        f.write(data[:len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r'0000001\.jpg .* is corrupt: truncated JPEG'):
        load(_frame(root, 1))


def test_checker_reports_the_damaged_jpeg(root):
    path = osp.join(root, 'kitti_format', 'training', 'image_0', '0000002.jpg')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(zero_middle(data))
    with pytest.raises(DataFileError, match='Corrupt JPEG data'):
        read_image(path)
    assert read_image(path, decode=False) == (64, 96)  # the fast mode only sees markers
    problems = [str(p) for p in check_data_root(root, check_projection=False).problems]
    assert len(problems) == 1 and problems[0].startswith(f'{path}: corrupt image data'), problems
