"""CPU check: split every predicted instance of saved predictions into its 26-connected
components. The largest component keeps the instance's (track) id; every other component of
at least MIN_SIZE voxels becomes an instance of its own with an id used nowhere else (no
association); smaller ones keep their class and lose their instance id. Run from the
repository root, then score OUT_DIR (e.g. with tools/analysis_tools/oracle_association.py):

    python docs/benchmark_runs/oracle_association_cpu_2026-12-02/component_split.py \
        PRED_DIR OUT_DIR MIN_SIZE
"""
import glob
import os
import sys

import numpy as np
from scipy import ndimage

from trackocc.evaluation import functional as core

FIRST_NEW_ID = 20000  # above the model's track ids in these predictions (checked)


def main(src: str, dst: str, min_size: int) -> dict:
    os.makedirs(dst, exist_ok=True)
    cube = ndimage.generate_binary_structure(3, 3)
    new_id, counts = FIRST_NEW_ID, dict(instances=0, extra=0, dropped_voxels=0)
    for path in sorted(glob.glob(os.path.join(src, '*.npz'))):
        sem, inst = core.load_pred_frame(path)
        inst = inst.reshape(core.GRID_SHAPE)
        ids = np.unique(inst[inst != 0])
        if len(ids) and ids.max() >= FIRST_NEW_ID:
            raise ValueError(f'{path}: track id {ids.max()} >= {FIRST_NEW_ID}')
        out = np.zeros_like(inst)
        for i in ids:
            labels, n = ndimage.label(inst == i, structure=cube)
            sizes = np.bincount(labels.ravel())[1:]
            largest = int(np.argmax(sizes)) + 1
            out[labels == largest] = i
            for k in range(1, n + 1):
                if k == largest:
                    continue
                if sizes[k - 1] < min_size:
                    counts['dropped_voxels'] += int(sizes[k - 1])
                    continue
                new_id += 1
                if new_id > np.iinfo(np.int16).max:
                    raise ValueError('more new instances than int16 ids: raise MIN_SIZE')
                out[labels == k] = new_id
                counts['extra'] += 1
            counts['instances'] += 1
        core.write_pred_frame(os.path.join(dst, os.path.basename(path)), sem, out.reshape(-1))
    return counts


if __name__ == '__main__':
    print(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
