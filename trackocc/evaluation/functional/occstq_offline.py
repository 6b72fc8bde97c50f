"""Score saved predictions against the gt npz tree, streaming one frame at a time.

Used by ``tools/evaluate_predictions.py`` and the tests. numpy only.
"""
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from trackocc.structures import (GRID_SHAPE, SPLIT_IDS, OccFileError, find_occ_files,
                                 find_pred_files, load_gt_frame, load_pred_frame, make_sample_idx,
                                 split_sample_idx)
from .occstq_summary import summarize
from .sequence_accumulator import SequenceAccumulator, SequenceStats, evaluation_mask
from .settings import OccSTQSettings

MISSING_PRED_MODES = ('error', 'empty', 'skip')
#: split names the tools accept -> the split folder
SPLIT_ALIASES = {'train': 'training', 'training': 'training', 'val': 'validation',
                 'validation': 'validation'}


def _short_list(items: List[str], limit: int = 20) -> str:
    more = f' ... and {len(items) - limit} more' if len(items) > limit else ''
    return ', '.join(items[:limit]) + more


def resolve_gt_root(gt_root: str, split: str) -> str:
    """``gt_root`` itself, or ``gt_root/pano_voxel04`` when only that holds ``split`` (a data
    root given for the gt tree)."""
    nested = os.path.join(gt_root, 'pano_voxel04')
    if not os.path.isdir(os.path.join(gt_root, split)) and \
            os.path.isdir(os.path.join(nested, split)):
        return nested
    return gt_root


def scoring_inputs(split: str, gt_root: str, strict: bool
                   ) -> Tuple[str, OccSTQSettings, str]:
    """What a scoring tool's ``--split``, GT_ROOT and ``--strict`` mean: the split folder
    name, the OccSTQ settings (strict or the reference's) and the gt tree to read."""
    split = SPLIT_ALIASES[split]
    settings = OccSTQSettings.strict() if strict else OccSTQSettings()
    return split, settings, resolve_gt_root(gt_root, split)


def plan_frames(gt_root: str, pred_dir: str, split: str = 'validation',
                missing_pred: str = 'error', load_interval: int = 1
                ) -> List[Tuple[int, int, str, Optional[str]]]:
    """Check the two trees and list ``(seq, frame, gt_path, pred_path or None)`` in order.

    Every prediction needs a gt frame; every gt frame whose ``frame % load_interval == 0``
    needs a prediction unless ``missing_pred`` is 'empty' (then it is scored as all free with
    no instance) or 'skip' (then it is left out, as the original scores only predicted frames).
    Raises :class:`OccFileError` naming the offending files.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f'split must be one of {sorted(SPLIT_IDS)}, got {split!r}')
    if missing_pred not in MISSING_PRED_MODES:
        raise ValueError(f'missing_pred must be one of {MISSING_PRED_MODES}, got {missing_pred!r}')
    if load_interval < 1:
        raise ValueError(f'load_interval must be >= 1, got {load_interval}')
    split_id = SPLIT_IDS[split]
    preds = find_pred_files(pred_dir)
    gts = find_occ_files(gt_root, split)
    decoded = {i: split_sample_idx(i) for i in preds}
    wrong_split = [p for i, p in preds.items() if decoded[i].split_id != split_id]
    if wrong_split:
        raise OccFileError(f'predictions whose sample_idx is not of split {split!r} '
                           f'(expected {split_id}xxxxxx): {_short_list(wrong_split)}')
    by_key = {(decoded[i].seq, decoded[i].frame): p for i, p in preds.items()}
    no_gt = [p for key, p in sorted(by_key.items()) if key not in gts]
    if no_gt:
        raise OccFileError(
            f'predictions without a ground-truth frame under '
            f'{os.path.join(gt_root, split)}: {_short_list(no_gt)}')
    missing = [gts[k] for k in sorted(gts) if k[1] % load_interval == 0 and k not in by_key]
    if missing and missing_pred == 'error':
        names = [os.path.join(pred_dir, f'{make_sample_idx(split_id, *k)}.npz')
                 for k in sorted(gts) if k[1] % load_interval == 0 and k not in by_key]
        raise OccFileError(f'{len(missing)} ground-truth frames have no prediction (use '
                           f'--missing-pred empty to score them as empty, or skip to leave '
                           f'them out): expected '
                           f'{_short_list(names)}')
    keys = set(by_key)
    if missing_pred == 'empty':
        keys |= {k for k in gts if k[1] % load_interval == 0}
    keys = sorted(keys)
    if not keys:
        kept = sum(1 for k in gts if k[1] % load_interval == 0)
        split_dir = os.path.join(gt_root, split)
        if not gts:
            why = f'{split_dir} holds no ground-truth frame (<seq>/<frame>_04.npz)'
        elif not kept:
            why = (f'no ground-truth frame of {split_dir} has frame % load_interval '
                   f'({load_interval}) == 0')
        else:
            why = f'--missing-pred {missing_pred} leaves out all {kept} ground-truth frames'
        raise OccFileError(f'nothing to score: {pred_dir} holds no prediction of split '
                           f'{split!r} and {why}')
    return [(seq, frame, gts[(seq, frame)], by_key.get((seq, frame))) for seq, frame in keys]


def _prefetched(tasks: List[Callable], workers: int, window: int) -> Iterator:
    """Run ``tasks`` in order on a few threads (zlib and file reads release the GIL), keeping
    at most ``window`` results in flight so memory stays flat; yields results in order."""
    if workers <= 0:
        for task in tasks:
            yield task()
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.submit(task))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def evaluate_directories(gt_root: str, pred_dir: str, split: str = 'validation',
                         settings: Optional[OccSTQSettings] = None,
                         missing_pred: str = 'error', load_interval: int = 1,
                         grid_shape: Tuple[int, ...] = GRID_SHAPE, io_workers: int = 2
                         ) -> Tuple[Dict[str, object], List[SequenceStats]]:
    """Score a prediction directory. Frames are read ``io_workers`` threads ahead (0 = no
    threads) and at most a few frames are held at a time; each sequence is closed after its
    last frame. Returns (summary dict of :func:`summarize`, per-sequence stats)."""
    settings = settings or OccSTQSettings()
    plan = plan_frames(gt_root, pred_dir, split, missing_pred, load_interval)
    n = int(np.prod(grid_shape))

    def load(gt_path: str, pred_path: Optional[str]):
        gt = load_gt_frame(gt_path, grid_shape)
        if pred_path is None:
            sem = np.full(n, settings.num_classes - 1, dtype=np.uint8)
            inst = np.zeros(n, dtype=np.int16)
        else:
            sem, inst = load_pred_frame(pred_path, grid_shape)
        mask = evaluation_mask(gt['mask_camera'], gt['infov'], settings, grid_shape)
        return sem, inst, gt['semantics'], gt['instances'], mask

    tasks = [lambda g=g, p=p: load(g, p) for _, _, g, p in plan]
    stats: List[SequenceStats] = []
    acc: Optional[SequenceAccumulator] = None
    for (seq, frame, gt_path, pred_path), arrays in zip(
            plan, _prefetched(tasks, io_workers, window=2 * max(io_workers, 1))):
        if acc is None or acc.sequence_id != seq:
            if acc is not None:
                stats.append(acc.close())
            acc = SequenceAccumulator(seq, settings)
        source = pred_path if pred_path is not None else f'{gt_path} (empty prediction)'
        acc.add_frame(*arrays, frame_idx=frame, source=source)
    if acc is not None:
        stats.append(acc.close())
    return summarize(stats, settings), stats
