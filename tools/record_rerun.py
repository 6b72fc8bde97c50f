#!/usr/bin/env python
"""Write a Rerun recording (.rrd) per occupancy sequence: timeline, cameras, ego, voxels.

    # gt and predictions of validation sequence 0, with the five cameras and the ego pose
    python tools/record_rerun.py --data-root data/synthetic-waymo --pred-dir work_dirs/preds \
        --split validation --sequences 0 --out work_dirs/rerun/val_000.rrd
    rerun work_dirs/rerun/val_000.rrd

    # predictions only (no data root: no cameras, no ego pose)
    python tools/record_rerun.py --pred-dir work_dirs/preds --out work_dirs/preds.rrd

Data and prediction arguments are those of tools/visualize_occupancy.py. Frame metadata
(timestamp, ego2global, camera calibration and image files) comes from the info pkl
(<data-root>/kitti_format/waymo_infos_{train,val}_jpg.pkl or --ann-file; images under
<ann-file folder>/training/image_{0..4}/). One sequence is written to --out; several are
written to <out stem>_<seq:03d>.rrd each. Entity layout: trackocc/visualization/
rerun_recording.py.
"""
import argparse
import os.path as osp
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from trackocc.utils.frame_selection import (add_frame_selection_args, check_frame_selection,
                                             selected_frames)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_frame_selection_args(parser, 'record')
    parser.add_argument('--ann-file', default=None,
                        help='info pkl with timestamps, ego poses and cameras (default: '
                             '<data-root>/kitti_format/waymo_infos_{train,val}_jpg.pkl)')
    parser.add_argument('--out', required=True,
                        help='.rrd file (several sequences: <stem>_<seq:03d>.rrd each)')
    parser.add_argument('--no-cameras', action='store_true', help='leave out the camera images')
    parser.add_argument('--all-instances', action='store_true',
                        help='keep gt instance ids of non-tracked classes (signs); by default '
                             'they are zeroed as the data set and the metric do')
    parser.add_argument('--style', default='boxes', choices=['boxes', 'points'],
                        help='voxels as solid cubes or as points at their centres')
    return parser.parse_args(argv)


def out_paths(out: str, seqs: List[int]) -> Dict[int, str]:
    """``--out`` for one sequence, ``<stem>_<seq:03d><ext>`` for each of several."""
    if len(seqs) == 1:
        return {seqs[0]: out}
    stem, ext = osp.splitext(out)
    return {seq: f'{stem}_{seq:03d}{ext or ".rrd"}' for seq in seqs}


def load_infos(path: str, split_id: int, st) -> Dict[int, dict]:
    """{sample_idx: info} of the split's frames in the info pkl."""
    from trackocc.datasets.data_checker import DataFileError, read_info_pkl
    try:
        data = read_info_pkl(path)
    except DataFileError as err:
        raise FileNotFoundError(str(err)) from None
    infos = {}
    for n, info in enumerate(data['data_list']):
        if not isinstance(info, dict) or 'sample_idx' not in info:
            raise ValueError(f'{path}: data_list[{n}] has no sample_idx')
        idx = int(info['sample_idx'])
        if st.split_sample_idx(idx).split_id == split_id:
            infos[idx] = info
    return infos


def find_frames(args, st) -> Dict[int, Dict[int, dict]]:
    """{seq: {frame: dict(gt=path or None, pred=path or None)}} of the requested frames
    (every frame with ground truth or a prediction)."""
    return selected_frames(args, pred_without_gt=True)


def make_frame(st, rr_mod, args, seq: int, frame: int, paths: dict, info: Optional[dict],
               ann_file: Optional[str], things):
    """The :class:`RecordingFrame` of one frame, read from its files."""
    sample_idx = st.make_sample_idx(st.SPLIT_IDS[args.split], seq, frame)
    where = f'frame {sample_idx:07d}'
    gt = pred = None
    if paths['gt'] is not None:
        arrays = st.load_gt_frame(paths['gt'], keys=('semantics', 'instances'))
        sem = arrays['semantics'].astype(np.int64)
        inst = arrays['instances'].astype(np.int64)
        if not args.all_instances:
            inst = np.where(np.isin(sem, things), inst, 0)
        gt = (sem, inst)
    if paths['pred'] is not None:
        sem, inst = st.load_pred_frame(paths['pred'])
        pred = (sem.reshape(st.GRID_SHAPE).astype(np.int64),
                inst.reshape(st.GRID_SHAPE).astype(np.int64))
    timestamp = ego2global = None
    cameras = []
    if info is not None:
        where = f'{ann_file} (sample_idx {sample_idx})'
        for key in ('timestamp', 'ego2global'):
            if key not in info:
                raise ValueError(f'{where}: no {key}')
        timestamp, ego2global = int(info['timestamp']), np.asarray(info['ego2global'])
        if not args.no_cameras:
            images = info.get('images') or {}
            image_root = osp.join(osp.dirname(ann_file), 'training')
            for name in st.CAMERA_NAMES:
                cam = images.get(name)
                if cam is None or not all(k in cam for k in ('img_path', 'cam2img',
                                                             'lidar2cam')):
                    raise ValueError(f'{where}: images.{name} with img_path, cam2img and '
                                     f'lidar2cam missing (--no-cameras leaves them out)')
                cameras.append(rr_mod.CameraView(
                    name, osp.join(image_root, st.CAMERA_FOLDERS[name],
                                   osp.basename(cam['img_path'])),
                    np.asarray(cam['cam2img']), np.asarray(cam['lidar2cam'])))
    return rr_mod.RecordingFrame(frame_idx=frame, timestamp_us=timestamp,
                                 ego2global=ego2global, cameras=cameras, gt=gt, pred=pred,
                                 source=where)


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_frame_selection(args)
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2

    from trackocc import structures as st
    from trackocc.visualization import rerun_recording as rr_mod

    split_id = st.SPLIT_IDS[args.split]
    ann_file = args.ann_file
    if ann_file is None and args.data_root is not None:
        ann_file = osp.join(args.data_root, 'kitti_format', st.INFO_FILES[split_id])
    try:
        frames = find_frames(args, st)
        infos = load_infos(ann_file, split_id, st) if ann_file else {}
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if not frames:
        print(f'error: no frames of split {args.split} found (gt root {args.gt_root}, '
              f'predictions {args.pred_dir}); nothing to record', file=sys.stderr)
        return 2
    if args.pred_dir and not any(p['pred'] for f in frames.values() for p in f.values()):
        print(f'error: {args.pred_dir} holds no prediction (<sample_idx>.npz) of the '
              f'requested {args.split} frames; nothing to record', file=sys.stderr)
        return 2
    if not ann_file:
        print('note: no info pkl (--data-root / --ann-file): no cameras, ego pose or timestamps')
    things = list(st.THING_CLASSES)
    outs = out_paths(args.out, list(frames))
    for seq, seq_frames in frames.items():
        start = time.perf_counter()
        name = f'trackocc {args.split} {seq:03d}'
        try:
            with rr_mod.SequenceRecorder(outs[seq], name=name, style=args.style) as rec:
                for frame, paths in seq_frames.items():
                    info = None
                    if ann_file:
                        info = infos.get(st.make_sample_idx(split_id, seq, frame))
                        if info is None:
                            raise ValueError(f'{ann_file}: no entry for sample_idx '
                                             f'{st.make_sample_idx(split_id, seq, frame)}')
                    rec.add(make_frame(st, rr_mod, args, seq, frame, paths, info, ann_file,
                                       things))
        except (OSError, ValueError) as err:  # OccFileError and RecordingInputError included
            print(f'error: {err}', file=sys.stderr)
            return 2
        voxels = sum(sum(v for k, v in c.items() if not k.endswith('instances'))
                     for c in rec.voxel_counts)
        print(f'sequence {seq:03d}: {rec.num_frames} frames, {voxels} voxels -> {outs[seq]} '
              f'({osp.getsize(outs[seq]) / 2**20:.1f} MiB, {time.perf_counter() - start:.1f} s)')
    print(f'open with: rerun {" ".join(outs.values())}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
