"""Sizes of predicted instances against gt instances, and what their voxels are in the gt.

    [MASKED=1] python instance_sizes.py GT_ROOT PRED_DIR

MASKED=1: only the voxels of OccSTQ's evaluation mask (camera mask, in view).
"""
import collections
import os
import sys

import numpy as np

from trackocc.evaluation.functional.occstq_offline import evaluation_mask, plan_frames
from trackocc.evaluation.functional.settings import OccSTQSettings
from trackocc.structures import GRID_SHAPE
from trackocc.structures.occ_npz import load_gt_frame, load_pred_frame

MASKED = os.environ.get('MASKED') == '1'
THINGS = (1, 2, 4)  # vehicle, pedestrian, cyclist


def main(gt_root: str, pred_dir: str) -> None:
    settings = OccSTQSettings()
    names = settings.class_names
    sizes, gt_touched = [], []
    pred_class, gt_class = collections.Counter(), collections.Counter()
    gt_sizes = collections.defaultdict(list)
    for _, _, gt_path, pred_path in plan_frames(gt_root, pred_dir, 'validation', 'error', 1):
        gt = load_gt_frame(gt_path, GRID_SHAPE)
        sem, inst = (a.reshape(-1).astype(np.int64)
                     for a in load_pred_frame(pred_path, GRID_SHAPE))
        gs, gi = gt['semantics'].reshape(-1), gt['instances'].reshape(-1)
        if MASKED:
            m = evaluation_mask(gt['mask_camera'], gt['infov'], settings, GRID_SHAPE).reshape(-1)
            sem, inst, gs, gi = sem[m], inst[m], gs[m], gi[m]
        for ident in np.unique(inst[inst > 0]):
            voxels = inst == ident
            sizes.append(int(voxels.sum()))
            pred_class.update({names[c]: int(n) for c, n in
                               zip(*np.unique(sem[voxels], return_counts=True))})
            gt_class.update({names[c]: int(n) for c, n in
                             zip(*np.unique(gs[voxels], return_counts=True))})
            gt_touched.append(len(np.unique(gi[voxels & (gi > 0)])))
        for cl in THINGS:
            gt_sizes[names[cl]] += np.unique(gi[(gs == cl) & (gi > 0)],
                                             return_counts=True)[1].tolist()
    sizes = np.array(sizes)
    print('pred instances', len(sizes), 'size median', np.median(sizes),
          'p90', np.percentile(sizes, 90), 'max', sizes.max())
    print('pred-class of their voxels', dict(pred_class.most_common(6)))
    print('GT class of their voxels', dict(gt_class.most_common(8)))
    print('distinct GT instances per pred instance: median', np.median(gt_touched),
          'mean', np.mean(gt_touched))
    print('gt instance sizes (median voxels):',
          {k: float(np.median(v)) for k, v in gt_sizes.items()})


if __name__ == '__main__':
    main(*sys.argv[1:3])
