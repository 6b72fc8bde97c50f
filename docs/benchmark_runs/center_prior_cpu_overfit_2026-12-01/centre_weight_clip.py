"""CPU check: can the tiny detector's thing-query centres be learnt on the overfit clip, and
how fast, at the centre loss weight of the configs (0.075) and at 10x?

The neighbouring-pedestrians clip of ``overfit_center_prior.py`` (mask_pos_balance 0.05, no
prior), AdamW as there; every 25 steps the centre L1 of the matched queries in metres (the
``loss_center`` terms of the step divided by the weight: per matched object the sum over x, y,
z and 0.2 x the velocity components, averaged over the clip's frames and decoder layers). Run
from the repository root:

    python docs/benchmark_runs/center_prior_cpu_overfit_2026-12-01/centre_weight_clip.py \
        WEIGHT SEED STEPS > centre_WEIGHT_SEED.json
"""
import json
import sys

import torch

sys.path[:0] = ['docs/benchmark_runs/instance_separation_cpu_overfit_2026-12-01',
                'tests/models', 'tests']
from overfit_neighbours import neighbour_frame  # noqa: E402
from test_detector import images  # noqa: E402
from test_overfit_clip import balanced_model, overfit_step  # noqa: E402

from trackocc.analysis.model_setup import quiet_logger  # noqa: E402


def main(weight: float, seed: int, steps: int) -> dict:
    quiet_logger('centre_weight_clip')
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    frames = [neighbour_frame(t) for t in range(3)]
    model = balanced_model(0.05, seed, criterion=dict(
        loss_center=dict(type='mmdet.L1Loss', loss_weight=weight)))
    imgs = images(1, 3, seed=5 + seed)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    records = []
    for step in range(1, steps + 1):
        terms = {}
        loss = overfit_step(model, opt, imgs, frames, terms)
        if step % 25 == 0 or step == 1:
            centre = [v / weight for k, v in terms.items() if 'loss_center' in k]
            records.append(dict(step=step, loss=round(loss, 3),
                                centre_l1_m=round(sum(centre) / max(len(centre), 1), 3)))
    return dict(weight=weight, seed=seed, rec=records)


if __name__ == '__main__':
    print(json.dumps(main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
