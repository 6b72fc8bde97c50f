"""Hand-made and generated OccSTQ inputs shared by the evaluation and tool tests."""
import glob
import os.path as osp
from typing import Callable, Optional

import numpy as np


def toy_frame(gt=(), pred=(), num_voxels: int = 40, background: int = 15):
    """(pred_sem, pred_inst, gt_sem, gt_inst) of a flat toy grid from ``[(voxels, class,
    id)]`` lists; every voxel not listed has class ``background`` and no instance."""
    arrays = []
    for objects in (pred, gt):
        sem = np.full(num_voxels, background, np.uint8)
        inst = np.zeros(num_voxels, np.int16)
        for voxels, cls, ident in objects:
            sem[list(voxels)], inst[list(voxels)] = cls, ident
        arrays += [sem, inst]
    return arrays


def gt_as_predictions(root: str, instances: Optional[Callable] = None) -> str:
    """One generated validation sequence of 3 frames under ``root`` and its gt written as
    predictions in ``root/pred`` (returned); ``instances(gt_instances, frame)`` may change the
    predicted ids."""
    from trackocc.datasets.synthetic import generate_synthetic_dataset
    from trackocc.evaluation.functional import write_pred_frame
    generate_synthetic_dataset(root, train_seqs=0, val_seqs=1, frames_per_seq=3, seed=3,
                               image_size=(96, 64), progress=False)
    pred = osp.join(root, 'pred')
    for path in sorted(glob.glob(osp.join(root, 'pano_voxel04', 'validation', '*', '*.npz'))):
        seq, frame = int(osp.basename(osp.dirname(path))), int(osp.basename(path)[:3])
        gt = np.load(path)
        ids = gt['instances'] if instances is None else instances(gt['instances'], frame)
        write_pred_frame(osp.join(pred, f'{1_000_000 + seq * 1000 + frame}.npz'),
                         gt['semantics'], ids)
    return pred
