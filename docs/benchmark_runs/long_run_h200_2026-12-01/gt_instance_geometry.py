"""How large and how close together are the things of a synthetic split? Per thing class, over
the instances visible to the cameras (mask_camera & infov, as OccSTQ scores them): voxels in
all and visible, the bird's-eye footprint, and the bird's-eye gap to the nearest other instance
of the same class (0: touching). Run from the repository root on a split that
`tools/create_data.py synthetic` wrote (the images do not matter, any size will do):

    python tools/create_data.py synthetic --out-dir /tmp/val2 --train-seqs 0 --val-seqs 6 \
        --frames-per-seq 10 --seed 2 --image-size 96 64 --workers 1 --no-progress --overwrite
    python docs/benchmark_runs/long_run_h200_2026-12-01/gt_instance_geometry.py \
        /tmp/val2/pano_voxel04 validation
"""
import sys

import numpy as np
from scipy import ndimage

from trackocc.structures import OCC_CLASS_NAMES, THING_CLASSES
from trackocc.structures.occ_npz import find_occ_files, read_occ_npz


def frame_rows(arrays):
    """(class, voxels, visible voxels, footprint cells, gap in free cells) per visible thing."""
    sem, inst = arrays['semantics'], arrays['instances']
    visible = (arrays['mask_camera'] > 0) & arrays['infov'].astype(bool)
    rows = []
    for cls in THING_CLASSES:
        of_class = (sem == cls) & (inst > 0)
        for iid in np.unique(inst[of_class]):
            mask = of_class & (inst == iid)
            if not (mask & visible).any():
                continue
            footprint = mask.any(2)
            others = (of_class & ~mask).any(2)
            # chessboard distance to the nearest other instance's cell; 1 = touching
            dist = ndimage.distance_transform_cdt(~others, metric='chessboard') if others.any() \
                else np.full(others.shape, 10**6)
            rows.append((cls, mask.sum(), (mask & visible).sum(), footprint.sum(),
                         dist[footprint].min() - 1))
    return rows


def main(root, split):
    files = find_occ_files(root, split)
    if not files:
        sys.exit(f'gt_instance_geometry: no ground-truth frames under {root}/{split}')
    rows = np.array([r for path in files.values() for r in frame_rows(read_occ_npz(path))])
    print(f'{len(files)} frames of {root}/{split}')
    print(f'{"class":<11}{"instances":>10}{"voxels":>8}{"visible":>8}{"footprint":>10}'
          f'   share with a same-class neighbour at a gap of <= 0 / 1 / 2 / 3 free cells')
    for cls in THING_CLASSES:
        r = rows[rows[:, 0] == cls]
        if not len(r):
            continue
        shares = ' / '.join(f'{np.mean(r[:, 4] <= g):.2f}' for g in range(4))
        print(f'{OCC_CLASS_NAMES[cls]:<11}{len(r):>10}{np.median(r[:, 1]):>8.0f}'
              f'{np.median(r[:, 2]):>8.0f}{np.median(r[:, 3]):>10.0f}   {shares}')
    print('(medians per instance-frame; a cell is 0.4 m x 0.4 m)')


if __name__ == '__main__':
    main(*sys.argv[1:3])
