"""CPU check: does the learnt spread of MaskCenterPrior leave the object scale while the tiny
detector overfits the neighbouring-pedestrians clip, as it did in the H200 trainings?

The clip and training steps of ``overfit_center_prior.py`` (mask_pos_balance BALANCE, prior
bounded at MAX_PENALTY, spread starting at 1.5 / 1.5 / 1.0 m, learnt); every 25 steps the
median spread over the thing queries of the last decoder layer in that step's forward. Run
from the repository root:

    python docs/benchmark_runs/center_prior_cpu_overfit_2026-12-01/sigma_trajectory.py \
        BALANCE SEED STEPS MAX_PENALTY > sigma_BALANCE_SEED_MAX_PENALTY.json
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


def main(balance: float, seed: int, steps: int, bound: str) -> dict:
    quiet_logger('sigma_trajectory')
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    frames = [neighbour_frame(t) for t in range(3)]
    max_penalty = None if bound == 'none' else float(bound)
    model = balanced_model(balance, seed, mask_center_prior=dict(
        init_sigma=(1.5, 1.5, 1.0), max_penalty=max_penalty))
    prior = model.pts_bbox_head.mask_center_prior
    seen = []
    prior.register_forward_hook(lambda mod, args, out: seen.append(mod.sigma(args[0]).detach()))
    imgs = images(1, 3, seed=5 + seed)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    records = []
    for step in range(1, steps + 1):
        seen.clear()
        loss = overfit_step(model, opt, imgs, frames)
        if step % 25 == 0:
            sigma = seen[-1].reshape(-1, 3)
            records.append(dict(step=step, loss=round(loss, 3),
                                sigma_median=sigma.median(0).values.tolist(),
                                sigma_min=sigma.min(0).values.tolist(),
                                sigma_max=sigma.max(0).values.tolist()))
    return dict(balance=balance, seed=seed, max_penalty=bound, rec=records)


if __name__ == '__main__':
    print(json.dumps(main(float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
