"""CPU experiment: are neighbouring small things kept apart, and does ClipMatcher's
mask_pos_balance merge or smear them?

The tiny detector of tests/models/test_overfit_clip.py overfits a 3-frame clip with a 6-voxel
vehicle and three 2-voxel pedestrians one free voxel apart (the learning check's held-out
failure: one mask over several neighbours, duplicates on the same person). Every 25 steps the
3 frames are streamed; per frame and pedestrian: the best IoU of a live track's mask (p >= 0.5)
with it; whether the three are matched at IoU >= 0.5 by three *different* tracks; and the
voxels of pedestrian-covering tracks that lie outside every pedestrian (smear). Run from the
repository root:

    python docs/benchmark_runs/instance_separation_cpu_overfit_2026-12-01/overfit_neighbours.py \
        BALANCE SEED STEPS > nb_BALANCE_SEED.json
"""
import json
import sys

import torch

sys.path[:0] = ['tests/models', 'tests']
from test_detector import make_frame  # noqa: E402
from test_overfit_clip import balance_experiment  # noqa: E402

from trackocc.analysis.model_setup import quiet_logger  # noqa: E402

# (x, y) of the three pedestrians (z 1..2 each); 12 is the test clip's own pedestrian
PEDESTRIANS = {12: (5, 15), 13: (5, 17), 14: (7, 15)}


def neighbour_frame(t):
    frame = make_frame(t, start=(t == 0))
    gt = frame.gt_occ
    for iid, (x, y) in PEDESTRIANS.items():
        gt.semantics[x, y, 1:3] = 2
        gt.instances[x, y, 1:3] = iid
    ids = [11] + list(PEDESTRIANS)
    gt.instance_ids = torch.tensor(ids, dtype=torch.long)
    gt.instance_labels = torch.tensor([1] + [2] * len(PEDESTRIANS), dtype=torch.long)
    return frame


def frame_stats(pred, frame):
    masks = pred['track_masks']  # (N, X*Y*Z) bool
    inst = frame.gt_occ.instances.flatten()
    peds = torch.stack([inst == iid for iid in PEDESTRIANS])  # (P, V)
    if len(masks) == 0:
        return dict(best=[0.0] * len(peds), separated=0, smear=0, tracks_on_peds=0)
    inter = (masks[:, None] & peds[None]).sum(-1).float()  # (N, P)
    union = (masks[:, None] | peds[None]).sum(-1).clamp(min=1).float()
    iou = inter / union
    best, owner = iou.max(0)
    matched = best >= 0.5
    separated = len(set(owner[matched].tolist()))  # distinct tracks among the matched
    on_peds = inter.sum(1) > 0
    smear = int((masks[on_peds] & ~peds.any(0)).sum())
    return dict(best=best.tolist(), separated=separated, smear=smear,
                tracks_on_peds=int(on_peds.sum()))


def main(balance: float, seed: int, steps: int) -> dict:
    quiet_logger('overfit_neighbours')
    frames = [neighbour_frame(t) for t in range(3)]
    return balance_experiment(balance, seed, steps, frames, lambda preds, step, loss: dict(
        step=step, frames=[frame_stats(p, f) for p, f in zip(preds, frames)], loss=loss))


if __name__ == '__main__':
    print(json.dumps(main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
