"""CPU check: run :class:`trackocc.models.trackers.PieceTracker` over saved predictions (the
merged instances of a ``tools/test.py`` run) and write the pieces' ids, to score with
``tools/analysis_tools/oracle_association.py`` or ``tools/evaluate_predictions.py``. Run
from the repository root:

    python docs/benchmark_runs/piece_tracking_cpu_2026-12-02/apply_piece_tracker.py \
        PRED_DIR INFO_PKL OUT_DIR [key=value ...]   # PieceTracker arguments
"""
import ast
import glob
import os
import pickle
import sys

import torch

from trackocc.evaluation import functional as core
from trackocc.models.trackers.piece_tracker import PieceTracker
from trackocc.structures import PC_RANGE, split_sample_idx


def main(src: str, info_pkl: str, dst: str, **kwargs) -> dict:
    with open(info_pkl, 'rb') as f:
        poses = {int(i['sample_idx']): i['ego2global'] for i in pickle.load(f)['data_list']}
    os.makedirs(dst, exist_ok=True)
    tracker = PieceTracker(core.GRID_SHAPE, PC_RANGE, **kwargs)
    counts, seq = dict(frames=0, pieces=0, fresh=0), None
    for path in sorted(glob.glob(os.path.join(src, '*.npz'))):
        sample_idx = int(os.path.basename(path)[:-4])
        if split_sample_idx(sample_idx).seq != seq:
            seq = split_sample_idx(sample_idx).seq
            counts['fresh'] += tracker.next_id - tracker.first_piece_id
            tracker.reset()
        sem, inst = core.load_pred_frame(path)
        out = tracker(torch.from_numpy(inst.astype('int32')), poses[sample_idx],
                      torch.from_numpy(sem.copy()))
        core.write_pred_frame(os.path.join(dst, os.path.basename(path)), sem,
                              out.numpy().astype(inst.dtype))
        counts['frames'] += 1
        counts['pieces'] += len(tracker.previous)
    counts['fresh'] += tracker.next_id - tracker.first_piece_id
    return counts


if __name__ == '__main__':
    options = {k: ast.literal_eval(v) for k, v in (a.split('=', 1) for a in sys.argv[4:])}
    print(main(*sys.argv[1:4], **options))
