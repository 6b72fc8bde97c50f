"""Synthetic TrackOcc-Waymo data set: all sequences, info pkls, atomic output directory.

Output layout (docs/data_contract.md)::

    <out>/kitti_format/waymo_infos_{train,val}_jpg.pkl
    <out>/kitti_format/training/image_{0..4}/<sample_idx:07d>.jpg
    <out>/kitti_format/training/velodyne/<sample_idx:07d>.bin
    <out>/pano_voxel04/{training,validation}/<seq:03d>/<frame:03d>_04.npz

Everything is written into ``<out>.partial-<pid>`` and renamed to ``<out>`` at the end, so an
existing ``<out>`` is always complete. Frames are 0.5 s apart (already the kept rate of the
released data: use ``load_interval=1``).
"""
import multiprocessing as mp
import os
import shutil
import sys
import time

import numpy as np

from ...structures.occ_classes import BOX_CATEGORIES, NUM_CLASSES, OCC_CLASS_NAMES
from ...structures.sample_index import INFO_FILES
from .constants import FRAME_INTERVAL_S
from .sequence import RenderConfig, SequenceGenerator
from .writer import write_pickle

DATASET_VERSION = 'trackocc-synthetic-1.0'
MIN_IMAGE_SIDE = 8  # pixels; smaller cameras leave the rendered scenes meaningless


def warmup_kernels():
    """Compile (or load from the numba cache) every kernel on a tiny scene."""
    cfg = RenderConfig(image_size=(16, 8), mask_ray_width=16, margin_voxels=2, render_layers=18,
                       lidar_beams=2, lidar_azimuth=8)
    gen = SequenceGenerator(os.devnull, 0, 0, 1, 0, cfg)
    sem, inst, ego = gen.voxelize(0)
    gen.render(sem, inst, ego)
    gen.lidar(sem, ego)
    cfg.mask_ray_width = 8  # also the separate visibility pass
    gen.render(sem, inst, ego)


def _is_empty_dir(path):
    return os.path.isdir(path) and not os.listdir(path)


def _run_task(args):
    root, split, seq, frames, seed, cfg = args
    return split, seq, SequenceGenerator(root, split, seq, frames, seed, cfg).run()


def metainfo(seed, cfg, frames_per_seq):
    return dict(
        dataset='TrackOccWaymo', version=DATASET_VERSION, info_version='1.1',
        classes=list(OCC_CLASS_NAMES),
        categories={name: i for i, name in enumerate(OCC_CLASS_NAMES)},
        box_categories=dict(BOX_CATEGORIES),
        synthetic=dict(seed=int(seed), image_size=list(cfg.image_size),
                       frames_per_seq=int(frames_per_seq), frame_interval_s=FRAME_INTERVAL_S,
                       num_classes=NUM_CLASSES))


class _Progress:
    """tqdm bar when available, else one line per finished sequence."""

    def __init__(self, total, enabled):
        self.bar, self.done, self.total, self.enabled = None, 0, total, enabled
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit='frame', desc='synthetic', file=sys.stderr)
            except ImportError:
                pass

    def update(self, n):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            print(f'[synthetic] {self.done}/{self.total} frames', file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def generate_synthetic_dataset(out_dir, train_seqs=2, val_seqs=1, frames_per_seq=6, seed=0,
                               image_size=(480, 320), workers=1, overwrite=False,
                               progress=True, side_height=None):
    """Write a synthetic TrackOcc-Waymo data set to ``out_dir``.

    Args:
        out_dir: target directory (must not exist or be empty unless ``overwrite``).
        train_seqs / val_seqs: number of sequences of split 0 / 1 (< 1000 each).
        frames_per_seq: frames per sequence (0.5 s apart, < 1000).
        seed: random seed; the output bytes depend only on the arguments.
        image_size: (W, H) of the camera images.
        workers: processes generating sequences in parallel.
        side_height: optional shorter height of the two side cameras.

    Returns:
        dict(out_dir, num_frames, seconds).
    """
    if not (0 <= train_seqs < 1000 and 0 <= val_seqs < 1000 and 0 < frames_per_seq < 1000):
        raise ValueError('sequences per split and frames per sequence must be in [0, 1000) '
                         f'(got {train_seqs}, {val_seqs}, {frames_per_seq})')
    if train_seqs + val_seqs == 0:
        raise ValueError('nothing to generate: train_seqs and val_seqs are both 0 '
                         '(--train-seqs / --val-seqs)')
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    w, h = (int(v) for v in image_size)
    if min(w, h, side_height or h) < MIN_IMAGE_SIDE:
        raise ValueError(f'image size {w}x{h}' + (f' (side height {side_height})'
                                                  if side_height else '')
                         + f' is too small: every side must be at least {MIN_IMAGE_SIDE} pixels')
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite and not _is_empty_dir(out_dir):
        raise FileExistsError(f'{out_dir} exists and is not empty; pass overwrite=True '
                              '(--overwrite) to replace it')
    cfg = RenderConfig(image_size=(w, h), side_height=side_height)
    start = time.perf_counter()
    tmp = f'{out_dir}.partial-{os.getpid()}'
    try:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    except OSError as err:
        raise OSError(f'cannot write the data set to {out_dir}: {err.strerror or err} (while '
                      f'creating its temporary folder {tmp})') from err
    tasks = [(tmp, split, seq, frames_per_seq, seed, cfg)
             for split, n in ((0, train_seqs), (1, val_seqs)) for seq in range(n)]
    results = {}
    bar = _Progress(len(tasks) * frames_per_seq, progress)
    try:
        warmup_kernels()  # compile once before forking, workers inherit the kernels
        if workers > 1 and len(tasks) > 1:
            ctx = mp.get_context('fork')
            with ctx.Pool(min(workers, len(tasks))) as pool:
                for split, seq, infos in pool.imap_unordered(_run_task, tasks):
                    results[(split, seq)] = infos
                    bar.update(len(infos))
        else:
            for task in tasks:
                split, seq, infos = _run_task(task)
                results[(split, seq)] = infos
                bar.update(len(infos))
        meta = metainfo(seed, cfg, frames_per_seq)
        for split in (0, 1):
            data_list = [info for key in sorted(results) if key[0] == split
                         for info in results[key]]
            write_pickle(os.path.join(tmp, 'kitti_format', INFO_FILES[split]),
                         dict(metainfo=meta, data_list=data_list))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    if _is_empty_dir(out_dir):
        os.rmdir(out_dir)
    if os.path.exists(out_dir):
        old = f'{out_dir}.old-{os.getpid()}'
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
    return dict(out_dir=out_dir, num_frames=len(tasks) * frames_per_seq,
                seconds=time.perf_counter() - start)

