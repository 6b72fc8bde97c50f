#!/usr/bin/env python
"""Stream a trackocc model over one sequence and write a demo video (MP4, optionally GIF).

    # validation sequence 0 of the demo data, prediction | ground truth, MP4 + GIF
    python tools/make_demo_video.py configs/trackocc/trackocc_tiny_synthetic.py \
        work_dirs/trackocc_tiny_synthetic/iter_200.pth --data-root data/synthetic-waymo \
        --sequence 0 --with-gt --gif --out work_dirs/demo/val_000.mp4

Frames: the five camera images, the 3D view of the predicted voxels (tracked instances in the
colour of their track id, the same in every frame; stuff in its class colour), with
``--with-gt`` the ground truth beside it (trackocc/visualization/demo_video.py). The data are
the config's test data (the dataset and pipeline of ``test_dataloader``), streamed frame by
frame in order, as tools/test.py does. MP4: H.264, yuv420p; written atomically.
"""
import argparse
import os.path as osp
import sys
import time

import numpy as np
from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (its test_dataloader gives the data)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file')
    parser.add_argument('--random-init', action='store_true',
                        help="use the config's weight initialisation instead of a checkpoint")
    parser.add_argument('--data-root', help="data set root (default: the config's)")
    parser.add_argument('--out', required=True,
                        help='.mp4 file (or .gif for a GIF only)')
    parser.add_argument('--gif', action='store_true', help='also write <out stem>.gif')
    parser.add_argument('--with-gt', action='store_true',
                        help='draw the ground truth beside the prediction')
    parser.add_argument('--sequence', type=int, default=None,
                        help='sequence number in the split of the test data (as in '
                             'visualize_occupancy.py), or its sequence_id (split * 1000 + '
                             'number); default: the first sequence')
    parser.add_argument('--max-frames', type=int, default=None,
                        help='stream at most this many frames (from the first)')
    parser.add_argument('--fps', type=float, default=2.0,
                        help='frames per second (2 = real time for frames 0.5 s apart)')
    parser.add_argument('--crf', type=int, default=20, help='x264 quality, 0-51, lower = better')
    parser.add_argument('--invisible', default='fade', choices=['fade', 'hide', 'show'],
                        help='voxels the cameras do not see (gt mask_camera & infov)')
    parser.add_argument('--unit', type=int, default=2,
                        help='3D view: pixels per voxel step (even; 2 -> 801 x 449 per view)')
    parser.add_argument('--no-cameras', action='store_true', help='leave out the camera strip')
    parser.add_argument('--device', default=None, help='cuda or cpu (default: cuda if present)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (not args.random_init):
        parser.error('give either a checkpoint or --random-init')
    if not args.out.lower().endswith(('.mp4', '.gif')):
        parser.error(f'--out must end with .mp4 or .gif: {args.out}')
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f'--max-frames must be >= 1, got {args.max_frames}')
    if not args.fps > 0:
        parser.error(f'--fps must be > 0, got {args.fps}')
    if not 0 <= args.crf <= 51:
        parser.error(f'--crf must be in [0, 51], got {args.crf}')
    if args.unit < 2 or args.unit % 2:
        parser.error(f'--unit must be an even number >= 2, got {args.unit}')
    return args


def sequence_items(dataset, sequence) -> np.ndarray:
    """Item indices, in stream order, of ``sequence`` (a number in the data's split or a
    ``sequence_id``; None = the first) of the test-mode ``dataset``."""
    from mmengine.fileio import load

    from trackocc.structures import split_sample_idx
    ids = np.asarray(dataset.item_sequence_ids)
    kept = list(dict.fromkeys(int(s) for s in ids))
    if not kept:
        raise ValueError(f'{dataset.ann_file} has no frames')
    if sequence is None:
        sid = kept[0]
    else:
        matches = [s for s in kept if s == sequence or (sequence < 1000 and s % 1000 == sequence)]
        if len(set(matches)) > 1:
            raise ValueError(f'sequence {sequence} is ambiguous in {dataset.ann_file}: '
                             f'sequence_ids {sorted(set(matches))}; give the sequence_id')
        if not matches:
            # in the info file but none of its frames kept, or not there at all
            raw = {split_sample_idx(info['sample_idx']).sequence_id
                   for info in load(dataset.ann_file)['data_list']}
            known = sorted(s for s in raw if s == sequence or (sequence < 1000 and
                                                               s % 1000 == sequence))
            if known:
                chosen = sorted(dataset.sequences) if dataset.sequences is not None else 'all'
                raise ValueError(f'sequence {sequence} (sequence_id {known[0]}) of '
                                 f'{dataset.ann_file} has no frames in the test data '
                                 f'(load_interval={dataset.load_interval}, '
                                 f'sequences={chosen})')
            raise ValueError(f'unknown sequence {sequence}: {dataset.ann_file} holds '
                             f'sequence_ids {kept} (numbers {[s % 1000 for s in kept]})')
        sid = matches[0]
    return np.flatnonzero(ids == sid)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        print(f'error: checkpoint {args.checkpoint} does not exist', file=sys.stderr)
        return 2

    import torch
    from mmengine.dataset import pseudo_collate

    from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
    from trackocc.registry import DATASETS
    from trackocc.visualization.demo_video import (DemoFrameRenderer, DemoVideoWriter,
                                                   demo_frame)

    quiet_logger('trackocc_demo_video')
    cfg = load_config(args.config, args.cfg_options)
    ds_cfg = cfg.test_dataloader.dataset.copy()
    if args.data_root is not None:
        ds_cfg.data_root = args.data_root.rstrip('/') + '/'
    try:
        dataset = DATASETS.build(ds_cfg)
        dataset.full_init()
        if not getattr(dataset, 'test_mode', False):
            raise ValueError(f'{args.config}: test_dataloader.dataset must be in test_mode')
        items = sequence_items(dataset, args.sequence)
    except (OSError, ValueError, KeyError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.max_frames is not None:
        items = items[:args.max_frames]

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        model = build_model(cfg, args.checkpoint, device, strict=True)
    except (OSError, RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    model.eval()
    model.reset_tracks()

    mp4 = args.out if args.out.lower().endswith('.mp4') else None
    gif = args.out if mp4 is None else (osp.splitext(args.out)[0] + '.gif' if args.gif else None)
    renderer = DemoFrameRenderer(unit=args.unit, invisible=args.invisible)
    start = time.perf_counter()
    try:
        with DemoVideoWriter(mp4, gif, fps=args.fps, crf=args.crf) as writer:
            for n, item in enumerate(items):
                with torch.no_grad():
                    sample = model.test_step(pseudo_collate([dataset[int(item)]]))[0]
                frame = demo_frame(sample, with_gt=args.with_gt, cameras=not args.no_cameras,
                                   backend_args=ds_cfg.get('backend_args'))
                writer.add(renderer.render(frame))
                print(f'frame {n + 1}/{len(items)}: {frame.title}', flush=True)
    except (OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    height, width = writer.size
    outs = ' and '.join(p for p in (mp4, gif) if p)
    print(f'wrote {writer.num_frames} frames of {width}x{height} at {args.fps:g} fps to {outs} '
          f'({time.perf_counter() - start:.1f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
