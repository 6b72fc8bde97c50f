"""CPU experiment: does TrackOccHead's mask_center_prior keep three neighbouring 2-voxel
pedestrians apart sooner, or stop the tiny detector from fitting them?

The clip, the streaming every 25 steps and the per-frame counts are those of
``instance_separation_cpu_overfit_2026-12-01/overfit_neighbours.py``; this adds the prior (a
spread of SIGMA metres in x and y, 1.0 m in z at the start; the tiny grid's voxels are 0.8 m,
the pedestrians 1.6 m apart). SIGMA 0: no prior. MAX_PENALTY: the prior's bound (default
``none``, unbounded: the runs cp_*.json here, made at commit cd8dd88 before the bound existed;
bounded/ holds the runs with 8). LEARN_SIGMA (default 1): 0 keeps the spread at SIGMA
(fixed_sigma/ holds those runs, bounded at 8). Run from the repository root:

    python docs/benchmark_runs/center_prior_cpu_overfit_2026-12-01/overfit_center_prior.py \
        BALANCE SIGMA SEED STEPS [MAX_PENALTY [LEARN_SIGMA]] > cp_BALANCE_SIGMA_SEED.json
"""
import json
import sys
from typing import Optional

sys.path[:0] = ['docs/benchmark_runs/instance_separation_cpu_overfit_2026-12-01',
                'tests/models', 'tests']
from overfit_neighbours import frame_stats, neighbour_frame  # noqa: E402
from test_overfit_clip import balance_experiment  # noqa: E402

from trackocc.analysis.model_setup import quiet_logger  # noqa: E402


def main(balance: float, sigma: float, seed: int, steps: int,
         max_penalty: Optional[float] = None, learn_sigma: bool = True) -> dict:
    quiet_logger('overfit_center_prior')
    frames = [neighbour_frame(t) for t in range(3)]
    head = dict(mask_center_prior=dict(init_sigma=(sigma, sigma, 1.0),
                                       max_penalty=max_penalty,
                                       learn_sigma=learn_sigma)) if sigma else {}
    result = balance_experiment(balance, seed, steps, frames, lambda preds, step, loss: dict(
        step=step, frames=[frame_stats(p, f) for p, f in zip(preds, frames)], loss=loss),
        **head)
    return dict(result, sigma=sigma, max_penalty=max_penalty, learn_sigma=learn_sigma)


if __name__ == '__main__':
    bound = sys.argv[5] if len(sys.argv) > 5 else 'none'
    print(json.dumps(main(float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                          int(sys.argv[4]), None if bound == 'none' else float(bound),
                          len(sys.argv) <= 6 or sys.argv[6] != '0')))
