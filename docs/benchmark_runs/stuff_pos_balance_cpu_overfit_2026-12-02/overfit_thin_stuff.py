"""CPU experiment: does StuffMaskLoss(mask_pos_balance) let a thin stuff segment appear?

The tiny detector of tests/models/test_overfit_clip.py overfits its 3-frame clip, here with a
pole (class 6) added: a 1 x 1 x HEIGHT-voxel column (HEIGHT 3: ~2e-3 of the grid's visible
voxels, 1: ~8e-4; the learning check's poles are ~1e-4 of theirs). Every 25
steps the 3 frames are streamed and the semantic IoU of the pole, and of road and building,
over the 3 frames is recorded. The things' ClipMatcher mask_pos_balance is 0.05 in both arms
(the learning-check recipe); only the stuff loss's differs. Run from the repository root (the
model's init log goes to stdout too: the JSON is the last line):

    python docs/benchmark_runs/stuff_pos_balance_cpu_overfit_2026-12-02/overfit_thin_stuff.py \
        BALANCE SEED STEPS [HEIGHT] | tail -1 > pole[HEIGHT]_BALANCE_SEED.json

(``pole_*.json``: HEIGHT 3; ``pole1_*.json``: HEIGHT 1)
"""
import json
import sys

sys.path[:0] = ['tests/models', 'tests']
from test_detector import make_frame  # noqa: E402
from test_overfit_clip import balance_experiment  # noqa: E402

POLE, ROAD, BUILDING = 6, 13, 10


def with_pole(frame, height):
    frame.gt_occ.semantics[14, 4, 1:1 + height] = POLE
    return frame


def class_iou(preds, frames, label):
    inter = sum(((p['semantics'] == label) & (f.gt_occ.semantics == label)).sum().item()
                for p, f in zip(preds, frames))
    union = sum(((p['semantics'] == label) | (f.gt_occ.semantics == label)).sum().item()
                for p, f in zip(preds, frames))
    return inter / max(union, 1)


def main(balance: float, seed: int, steps: int, height: int = 3) -> dict:
    frames = [with_pole(make_frame(t, start=(t == 0)), height) for t in range(3)]
    loss_stuff = dict(type='StuffMaskLoss', mask_pos_balance=balance)
    # the JSON's ``balance`` is the things' (0.05 in both arms); the stuff's is in the file name
    return balance_experiment(0.05, seed, steps, frames, lambda preds, step, loss: dict(
        step=step, pole=class_iou(preds, frames, POLE), road=class_iou(preds, frames, ROAD),
        building=class_iou(preds, frames, BUILDING), loss=loss), loss_stuff=loss_stuff)


if __name__ == '__main__':
    print(json.dumps(main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                          *(int(h) for h in sys.argv[4:5]))))
