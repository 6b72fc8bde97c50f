"""Time loading + augmenting one frame's camera images with each resampling mode.

    python tools/analysis_tools/benchmark_image_augmentation.py DATA_ROOT [--repeats 20]
        [--input-size 256 704] [--json OUT.json]

DATA_ROOT is a data set in the released layout, e.g. ``tools/create_data.py synthetic
--image-size 1920 1280 --side-height 886`` (Waymo's sizes). For every frame of its training
split, the five JPEG images are decoded (``LoadMultiViewImages``) and augmented with the
paper's training ranges (``MultiViewImageAugmentation``, fresh random parameters each time),
single-threaded as in a data-loader worker (``opencv_num_threads=0``). Modes: ``pil_bicubic``
on the full decode (the reference) and ``warp`` on a full or a 2x reduced decode, interleaved
frame by frame. Reported per mode: median and minimum process CPU milliseconds per 5-camera
frame (split into decoding and augmentation; CPU time is robust to other processes on the
machine) and the median wall-clock time.
"""
import argparse
import json
import os.path as osp
import time

import cv2
import numpy as np
from mmengine.registry import init_default_scope

from trackocc.datasets import WaymoTrackOccDataset
from trackocc.datasets.transforms import LoadMultiViewImages, MultiViewImageAugmentation
from trackocc.structures import CAMERA_FOLDERS, CAMERA_NAMES

CAMS = list(CAMERA_NAMES)
MODES = (('pil_bicubic', 1), ('warp', 1), ('warp', 2))  # (resample, decode_reduce)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('data_root')
    p.add_argument('--repeats', type=int, default=20, help='passes over the frames')
    p.add_argument('--input-size', type=int, nargs=2, default=(256, 704), metavar=('H', 'W'))
    p.add_argument('--json', help='write the results here')
    return p.parse_args()


def frames_of(data_root):
    prefix = dict(pts='kitti_format/training/velodyne', occ='pano_voxel04/training',
                  **{cam: f'kitti_format/training/{CAMERA_FOLDERS[cam]}' for cam in CAMS})
    ann = osp.join('kitti_format', 'waymo_infos_train_jpg.pkl')
    if not osp.isfile(osp.join(data_root, ann)):
        raise SystemExit(f'benchmark_image_augmentation: {osp.join(data_root, ann)} not found '
                         '(make a data set with tools/create_data.py synthetic)')
    ds = WaymoTrackOccDataset(data_root=data_root, ann_file=ann, data_prefix=prefix,
                              pipeline=[], test_mode=True)
    return [ds.get_data_info(i) for i in range(len(ds))]


def main():
    args = parse_args()
    init_default_scope('trackocc')
    cv2.setNumThreads(0)
    frames = frames_of(args.data_root)
    data_config = dict(input_size=tuple(args.input_size), resize=(-0.06, 0.11),
                       rot=(-5.4, 5.4), flip=True, crop_h=(0.0, 0.0), resize_test=0.0)
    np.random.seed(0)
    sizes = {tuple(img.shape[:2]) for img in
             LoadMultiViewImages(cams=CAMS)(dict(frames[0]))['img']}
    print(f'{len(frames)} frames, camera images {sorted(sizes)} -> {tuple(args.input_size)}, '
          f'{args.repeats} passes')
    pipes = [(f'{resample} (decode_reduce={reduce})',
              LoadMultiViewImages(cams=CAMS, decode_reduce=reduce),
              MultiViewImageAugmentation(data_config, is_train=True, resample=resample))
             for resample, reduce in MODES]
    times = {name: dict(wall=[], decode=[], augment=[]) for name, _, _ in pipes}
    for rep in range(args.repeats + 1):  # the first pass warms up
        for frame in frames:
            for name, load, aug in pipes:  # interleaved: the modes share the machine's noise
                w0, c0 = time.perf_counter(), time.process_time()
                res = load(dict(frame))
                c1 = time.process_time()
                aug(res)
                w2, c2 = time.perf_counter(), time.process_time()
                if rep:
                    times[name]['wall'].append(w2 - w0)
                    times[name]['decode'].append(c1 - c0)
                    times[name]['augment'].append(c2 - c1)
    results = {}
    for name, t in times.items():
        cpu = (np.add(t['decode'], t['augment'])) * 1e3
        results[name] = r = dict(
            cpu_ms_median=float(np.median(cpu)), cpu_ms_min=float(cpu.min()),
            decode_cpu_ms_median=float(np.median(t['decode']) * 1e3),
            augment_cpu_ms_median=float(np.median(t['augment']) * 1e3),
            wall_ms_median=float(np.median(t['wall']) * 1e3), samples=len(cpu))
        print(f'{name:30s} CPU {r["cpu_ms_median"]:6.1f} ms/frame (min {r["cpu_ms_min"]:.1f}): '
              f'decode {r["decode_cpu_ms_median"]:.1f} + augment '
              f'{r["augment_cpu_ms_median"]:.1f}; wall {r["wall_ms_median"]:.1f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
