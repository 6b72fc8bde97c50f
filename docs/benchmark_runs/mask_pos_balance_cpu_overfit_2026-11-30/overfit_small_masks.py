"""CPU experiment: does ClipMatcher(mask_pos_balance) make a small mask appear sooner?

The tiny detector of tests/models/test_overfit_clip.py overfits its 3-frame clip (a 6-voxel
vehicle, a 2-voxel pedestrian) with AdamW. Every 25 steps the 3 frames are streamed and, per
frame, the best IoU of a live track's mask (p >= 0.5) with the pedestrian and with the vehicle
is recorded. Run from the repository root:

    python docs/benchmark_runs/mask_pos_balance_cpu_overfit_2026-11-30/overfit_small_masks.py \
        BALANCE SEED STEPS > ped_BALANCE_SEED.json
"""
import json
import sys


sys.path[:0] = ['tests/models', 'tests']
from test_detector import make_frame  # noqa: E402
from test_overfit_clip import balance_experiment  # noqa: E402


def best_iou(preds, frames, instance_id):
    """Per frame: the best IoU of a live track's mask with the gt instance."""
    out = []
    for pred, frame in zip(preds, frames):
        gt = (frame.gt_occ.instances == instance_id).flatten()
        masks = pred['track_masks']
        if len(masks) == 0:
            out.append(0.0)
            continue
        iou = (masks & gt).sum(1) / (masks | gt).sum(1).clamp(min=1)
        out.append(float(iou.max()))
    return out


def main(balance: float, seed: int, steps: int) -> dict:
    frames = [make_frame(t, start=(t == 0)) for t in range(3)]
    gt = frames[0].gt_occ
    by_label = dict(zip(gt.instance_labels.tolist(), gt.instance_ids.tolist()))
    pedestrian, vehicle = by_label[2], by_label[1]
    return balance_experiment(balance, seed, steps, frames, lambda preds, step, loss: dict(
        step=step, ped=best_iou(preds, frames, pedestrian),
        veh=best_iou(preds, frames, vehicle),
        ped_voxels=[int((f.gt_occ.instances == pedestrian).sum()) for f in frames], loss=loss))


if __name__ == '__main__':
    print(json.dumps(main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
