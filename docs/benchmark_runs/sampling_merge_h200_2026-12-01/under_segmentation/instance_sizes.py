"""Sizes of predicted instances against gt instances, and what their voxels are in the gt.

    [MASKED=1] python instance_sizes.py GT_ROOT PRED_DIR
MASKED=1: only the voxels of OccSTQ's evaluation mask (camera mask, in view)."""
import numpy as np, sys, collections, os
MASKED = os.environ.get('MASKED') == '1'
from trackocc.evaluation.functional.occstq_offline import plan_frames, evaluation_mask
from trackocc.evaluation.functional.settings import OccSTQSettings
from trackocc.structures.occ_npz import load_gt_frame, load_pred_frame
from trackocc.structures import GRID_SHAPE
s = OccSTQSettings(); names = s.class_names
sizes, comp, gtcount, gtcls = [], collections.Counter(), [], collections.Counter()
gtsizes = collections.defaultdict(list)
for seq, frame, gt_path, pred_path in plan_frames(sys.argv[1], sys.argv[2], 'validation', 'error', 1):
    gt = load_gt_frame(gt_path, GRID_SHAPE)
    sem, inst = (a.reshape(-1).astype(np.int64) for a in load_pred_frame(pred_path, GRID_SHAPE))
    gs, gi = gt['semantics'].reshape(-1), gt['instances'].reshape(-1)
    m = evaluation_mask(gt['mask_camera'], gt['infov'], s, GRID_SHAPE).reshape(-1)
    if MASKED: sem, inst, gs, gi = sem[m], inst[m], gs[m], gi[m]
    for i in np.unique(inst[inst > 0]):
        v = inst == i
        sizes.append(int(v.sum()))
        for c, n in zip(*np.unique(sem[v], return_counts=True)): comp[names[c]] += n
        for c, n in zip(*np.unique(gs[v], return_counts=True)): gtcls[names[c]] += n
        g = gi[v & (gi > 0)]
        gtcount.append(len(np.unique(g)))
    for cl in (1, 2, 4):
        ids, n = np.unique(gi[(gs == cl) & (gi > 0)], return_counts=True)
        gtsizes[names[cl]] += n.tolist()
a = np.array(sizes)
print('pred instances', len(a), 'size median', np.median(a), 'p90', np.percentile(a, 90), 'max', a.max())
print('pred-class of their voxels', dict(comp.most_common(6)))
print('GT class of their voxels', dict(gtcls.most_common(8)))
print('distinct GT instances per pred instance: median', np.median(gtcount), 'mean', np.mean(gtcount))
print('gt instance sizes (median voxels):', {k: float(np.median(v)) for k, v in gtsizes.items()})
