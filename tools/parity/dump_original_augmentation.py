"""Run the original TrackOcc's image augmentation on small synthetic images; save a fixture.

Run with the reference environment (tools/parity/setup_reference_env.sh)::

    .venv-ref/bin/python tools/parity/dump_original_augmentation.py \
        --original /path/to/TrackOcc --out tests/data/original_image_augmentation.npz

It uses the original's own ``OccWaymoPrepareImageInputs`` (``loaders/pipelines/
waymo_loading.py``), unedited, in two ways:

* ``fixed_*``: ``img_transform`` (Pillow resize -> crop -> flip -> rotate, and the
  ``post_rot`` / ``post_tran`` it composes) with hand-picked parameters covering flips,
  rotations, crops reaching outside the image, up- and downscaling;
* ``drawn_*``: ``get_inputs`` on a five-camera frame (three 'front' and two shorter 'side'
  images, read from PNG files so the decoding is lossless), after ``np.random.seed(seed)``:
  two training frames in a row (``is_train=True``, the paper config's ranges) and one test
  frame. This records which parameters the original draws, per camera and per call, from
  numpy's global generator, with the resulting pixels and matrices.

The source image is built with integer arithmetic only (gradients, a checkerboard, rings,
one-pixel stripes, a painted block) and stored in the fixture; the 'side' image is its rows
``SIDE_ROWS``.
tests/datasets/test_augmentation_parity.py checks that ``MultiViewImageAugmentation``
(``resample='pil_bicubic'``, ``draw='per_camera_per_frame'``) reproduces all of it.
"""
import argparse
import hashlib
import os
import sys
import tempfile

import numpy as np

CAMS = ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_SIDE_LEFT', 'CAM_SIDE_RIGHT')
FRONT_HW = (128, 192)  # Waymo's 1280x1920 front images, scaled by 0.1
SIDE_ROWS = (24, 112)  # 88 rows, as the 886-row side images
INPUT_HW = (32, 72)  # about the paper's 256 / 1280 and 704 / 1920 scales
# the paper config's ranges (configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py 76-91)
PAPER_RANGES = dict(resize=(-0.06, 0.11), rot=(-5.4, 5.4), flip=True, crop_h=(0.0, 0.0),
                    resize_test=0.0)
# (source, resize (w, h), crop origin (x0, y0), flip, rotate degrees)
FIXED_CASES = (
    ('front', (0.41, 0.27), (3, 2), True, 4.2),
    ('front', (0.37, 0.22), (0, -6), False, -5.4),  # rows above the image: zero padding
    ('front', (1.3, 1.1), (40, 90), True, 20.0),  # upscaling, strong rotation
    ('front', (0.375, 0.25), (0, 0), False, 0.0),  # the test-time map
    ('side', (0.43, 0.41), (5, 4), False, -3.3),
    ('side', (0.35, 0.30), (-4, 0), True, 1.0),  # columns left of the image
)


def source_image(height, width):
    """(H, W, 3) uint8 test pattern from integer arithmetic (identical on any machine)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    img = np.empty((height, width, 3), np.int64)
    img[..., 0] = (3 * x + 2 * y) % 256
    img[..., 1] = np.where((x // 6 + y // 6) % 2 == 0, 40, 210)
    img[..., 2] = ((x - width // 2) ** 2 + (y - height // 3) ** 2) // 8 % 256
    stripes = (x > width // 2) & (y > height // 2)
    img[stripes, 1] = np.where((x[stripes] + y[stripes]) % 2 == 0, 0, 255)
    img[10:20, 30:45] = (250, 30, 20)
    return img.astype(np.uint8)


def import_original(original):
    original = os.path.realpath(original)
    if not os.path.isfile(os.path.join(original, 'loaders/pipelines/waymo_loading.py')):
        sys.exit(f'dump_original_augmentation: {original} is not a checkout of the original '
                 'TrackOcc (loaders/pipelines/waymo_loading.py missing)')
    sys.path.insert(0, original)
    from loaders.pipelines.waymo_loading import OccWaymoPrepareImageInputs
    return original, OccWaymoPrepareImageInputs


def run_fixed(prepare, sources):
    import torch
    from PIL import Image
    out_h, out_w = INPUT_HW
    imgs, rots, trans, params = [], [], [], []
    for src, resize, (x0, y0), flip, rotate in FIXED_CASES:
        img = sources[src]
        dims = (int(img.shape[1] * resize[0]), int(img.shape[0] * resize[1]))
        crop = (x0, y0, x0 + out_w, y0 + out_h)
        res, rot, tran = prepare.img_transform(
            Image.fromarray(img), torch.eye(2), torch.zeros(2), resize=list(resize),
            resize_dims=dims, crop=crop, flip=flip, rotate=rotate)
        imgs.append(np.array(res))
        rots.append(rot.numpy())
        trans.append(tran.numpy())
        params.append([resize[0], resize[1], dims[0], dims[1], *crop, float(flip), rotate])
    return dict(fixed_source=np.array([0 if c[0] == 'front' else 1 for c in FIXED_CASES]),
                fixed_params=np.array(params, np.float64), fixed_img=np.stack(imgs),
                fixed_post_rot=np.stack(rots), fixed_post_tran=np.stack(trans))


def run_drawn(prepare_cls, sources, seed, tmp):
    from PIL import Image
    images = {}
    for i, cam in enumerate(CAMS):
        path = os.path.join(tmp, f'{cam}.png')
        Image.fromarray(sources['front' if i < 3 else 'side']).save(path)
        images[cam] = dict(img_path=path, cam2img=np.eye(3), lidar2cam=np.eye(4))
    data_config = dict(PAPER_RANGES, cams=list(CAMS), Ncams=len(CAMS), input_size=INPUT_HW)
    np.random.seed(seed)
    frames = []
    for is_train in (True, True, False):
        prepare = prepare_cls(data_config=data_config, is_train=is_train)
        results = dict(curr=dict(images=images, ego2global=np.eye(4)))
        (_, _, _, _, post_rots, post_trans), _ = prepare.get_inputs(results)
        augs = []
        for cam in CAMS:
            resize, dims, crop, flip, rotate = results['img_augs'][cam]
            augs.append([resize[0], resize[1], dims[0], dims[1], *crop, float(bool(flip)),
                         float(rotate)])
        frames.append((np.stack(results['canvas']), post_rots[:, :2, :2].numpy(),
                       post_trans[:, :2].numpy(), np.array(augs, np.float64)))
    return dict(drawn_is_train=np.array([True, True, False]),
                drawn_img=np.stack([f[0] for f in frames]),
                drawn_post_rot=np.stack([f[1] for f in frames]),
                drawn_post_tran=np.stack([f[2] for f in frames]),
                drawn_params=np.stack([f[3] for f in frames]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--original', required=True, help='checkout of the original TrackOcc')
    p.add_argument('--out', required=True, help='fixture to write (.npz)')
    p.add_argument('--seed', type=int, default=20250)
    args = p.parse_args(argv)
    original, prepare_cls = import_original(args.original)
    import PIL
    import torch
    front = source_image(*FRONT_HW)
    sources = dict(front=front, side=front[SIDE_ROWS[0]:SIDE_ROWS[1]])
    data_config = dict(PAPER_RANGES, cams=list(CAMS), Ncams=len(CAMS), input_size=INPUT_HW)
    fixture = dict(src_front=front, side_rows=np.array(SIDE_ROWS),
                   input_size=np.array(INPUT_HW), seed=np.array(args.seed),
                   **{f'ranges_{k}': np.array(v, np.float64) for k, v in PAPER_RANGES.items()})
    fixture.update(run_fixed(prepare_cls(data_config=data_config, is_train=False), sources))
    with tempfile.TemporaryDirectory() as tmp:
        fixture.update(run_drawn(prepare_cls, sources, args.seed, tmp))
    with open(os.path.join(original, 'loaders/pipelines/waymo_loading.py'), 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    fixture['meta'] = np.array(
        f'original waymo_loading.py sha256 {digest}...; Pillow {PIL.__version__}, '
        f'numpy {np.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}')
    out = os.path.abspath(args.out)
    fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(out), suffix='.npz.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez_compressed(f, **fixture)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates it private
        os.replace(tmp_path, out)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    print(f'wrote {out} ({os.path.getsize(out) / 1024:.0f} KiB): {fixture["meta"]}')


if __name__ == '__main__':
    main()
