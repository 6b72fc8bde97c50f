#!/usr/bin/env python
"""Render ground truth and/or saved predictions of occupancy sequences to PNGs and GIFs.

    # gt | prediction of validation sequences 0 and 3, with the camera images
    python tools/visualize_occupancy.py --data-root data/synthetic-waymo \
        --pred-dir work_dirs/preds --split validation --sequences 0 3 --out-dir work_dirs/vis

    # predictions only (no gt on disk)
    python tools/visualize_occupancy.py --pred-dir work_dirs/preds --split validation \
        --out-dir work_dirs/vis

Ground truth: <data-root>/pano_voxel04/<split>/<seq:03d>/<frame:03d>_04.npz (or --gt-root
pointing at pano_voxel04); camera images: <data-root>/kitti_format/training/image_{0..4}/
<sample_idx:07d>.jpg when present. Predictions: <pred-dir>/<sample_idx>.npz with flat pano_sem /
pano_inst (what OccSTQMetric(format_only=True) writes, see tools/evaluate_predictions.py).
Writes <out-dir>/<seq:03d>/<frame:03d>.png and <out-dir>/<split>_<seq:03d>.gif per sequence.
"""
import argparse
import os.path as osp
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from trackocc import structures as core
from trackocc.utils.frame_selection import (add_frame_selection_args, check_frame_selection,
                                             selected_frames)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_frame_selection_args(parser, 'render')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--no-cameras', action='store_true', help='leave out the camera strip')
    parser.add_argument('--no-3d', action='store_true', help='leave out the 3D renders')
    parser.add_argument('--no-gif', action='store_true')
    parser.add_argument('--gif-duration', type=float, default=0.5, help='seconds per frame')
    parser.add_argument('--gif-width', type=int, default=960, help='GIF width limit (pixels)')
    parser.add_argument('--all-instances', action='store_true',
                        help='keep gt instance ids of non-tracked classes (signs); by default '
                             'they are zeroed as the data set and the metric do')
    return parser.parse_args(argv)


def find_frames(args) -> Dict[int, Dict[int, Dict[str, Optional[str]]]]:
    """{seq: {frame: dict(gt=path or None, pred=path or None)}} of the requested frames."""
    return selected_frames(args)


def load_sample(seq: int, frame: int, paths: Dict[str, Optional[str]], args,
                thing_classes) -> dict:
    """A frame as the visualizer reads it (plain dicts of numpy arrays)."""
    split_id = core.SPLIT_IDS[args.split]
    sample_idx = core.make_sample_idx(split_id, seq, frame)
    sample = dict(sample_idx=sample_idx, frame_idx=frame,
                  sequence_id=core.split_sample_idx(sample_idx).sequence_id)
    if paths['gt'] is not None:
        gt = core.load_gt_frame(paths['gt'])
        sem = gt['semantics'].astype(np.int64)
        inst = gt['instances'].astype(np.int64)
        if not args.all_instances:
            inst = np.where(np.isin(sem, thing_classes), inst, 0)
        sample['gt_occ'] = dict(semantics=sem, instances=inst,
                                mask_camera=gt['mask_camera'].astype(bool),
                                infov=gt['infov'].astype(bool))
    if paths['pred'] is not None:
        pred_sem, pred_inst = core.load_pred_frame(paths['pred'])
        sample['pred_occ'] = dict(semantics=pred_sem.reshape(core.GRID_SHAPE),
                                  instances=pred_inst.reshape(core.GRID_SHAPE))
    if args.data_root and not args.no_cameras:
        image_paths = [osp.join(args.data_root, 'kitti_format', 'training',
                                core.CAMERA_FOLDERS[cam], f'{sample_idx:07d}.jpg')
                       for cam in core.CAMERA_NAMES]
        if all(osp.isfile(p) for p in image_paths):
            sample.update(img_path=image_paths, cam_names=list(core.CAMERA_NAMES))
    return sample


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_frame_selection(args)
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2

    from trackocc.visualization import OccupancyVisualizer

    try:
        frames = find_frames(args)
    except (FileNotFoundError, core.OccFileError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if not frames:
        print(f'error: no frames found for split {args.split}', file=sys.stderr)
        return 2
    if args.pred_dir and not any(p['pred'] for f in frames.values() for p in f.values()):
        gt_note = '' if args.no_gt or not args.gt_root else \
            f' for the ground-truth frames under {osp.join(args.gt_root, args.split)}'
        print(f'error: {args.pred_dir} holds no prediction (<sample_idx>.npz) of split '
              f'{args.split}{gt_note}; nothing to render', file=sys.stderr)
        return 2
    vis = OccupancyVisualizer(name='visualize_occupancy', draw_3d=not args.no_3d,
                              draw_cameras=not args.no_cameras)
    things = list(core.THING_CLASSES)
    start = time.perf_counter()
    total = 0
    for seq, seq_frames in frames.items():
        pngs: List[str] = []
        skipped = 0
        for frame, paths in seq_frames.items():
            if args.pred_dir and paths['pred'] is None:
                skipped += 1  # gt without prediction: figures of a GIF keep one layout
                continue
            try:
                sample = load_sample(seq, frame, paths, args, things)
            except core.OccFileError as err:
                print(f'error: {err}', file=sys.stderr)
                return 2
            out_file = osp.join(args.out_dir, f'{seq:03d}', f'{frame:03d}.png')
            vis.add_datasample(args.split, sample, out_file=out_file)
            pngs.append(out_file)
        total += len(pngs)
        note = f' ({skipped} gt frames without prediction skipped)' if skipped else ''
        if pngs and not args.no_gif:
            gif_file = osp.join(args.out_dir, f'{args.split}_{seq:03d}.gif')
            vis.render_sequence_gif(pngs, gif_file, duration=args.gif_duration,
                                    max_width=args.gif_width)
            print(f'sequence {seq:03d}: {len(pngs)} frames -> {gif_file}{note}')
        else:
            print(f'sequence {seq:03d}: {len(pngs)} frames{note}')
    print(f'{total} frames rendered to {args.out_dir} in {time.perf_counter() - start:.1f} s')
    if not total:
        print('error: no frame was rendered', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
