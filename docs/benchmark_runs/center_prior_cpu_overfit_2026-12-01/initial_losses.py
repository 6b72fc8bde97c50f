"""CPU check: the learning-check model's losses and gradient norm at initialisation, without
the mask centre prior, with it unbounded (as the 2026-12-01 H200 run trained it) and bounded.

One training sample of DATA_ROOT through the config's training pipeline, cut to one frame
(a 3-frame clip of the full model does not fit 24 GiB on the CPU in float32),
the same weights in every setting (the no-prior model's, the prior's own branch at its
start). Prints one JSON line per setting: the loss terms of frame 0, the total and the
gradient norm before clipping (the configs clip at 35). Run from the repository root:

    python docs/benchmark_runs/center_prior_cpu_overfit_2026-12-01/initial_losses.py DATA_ROOT
"""
import json
import sys

import torch

from trackocc.analysis.model_setup import build_model, load_config, quiet_logger

CONFIG = ('configs/trackocc/'
          'trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_center-prior.py')
SETTINGS = {'no prior': None, 'unbounded': dict(max_penalty=None),
            'bounded 8': dict(max_penalty=8.0), 'bounded 4': dict(max_penalty=4.0)}


def first_batch(cfg, data_root: str):
    from mmengine.runner import Runner
    loader = dict(cfg.train_dataloader, num_workers=0, persistent_workers=False,
                  batch_size=1)
    loader['dataset'] = dict(loader['dataset'], data_root=data_root, num_frames_per_sample=1)
    return next(iter(Runner.build_dataloader(loader, seed=0)))


def losses(model, batch) -> dict:
    model.train()
    model.zero_grad()
    torch.manual_seed(0)  # query dropping / false-positive sampling
    data = model.data_preprocessor(batch, training=True)
    terms = model.loss(**data)
    total = sum(terms.values())
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float('inf'))
    frame0 = {k[len('frame0_'):]: round(float(v), 3) for k, v in terms.items()
              if k.startswith('frame0_')}
    return dict(total=round(float(total), 2), grad_norm=round(float(norm), 1), **frame0)


def main(data_root: str) -> None:
    quiet_logger('initial_losses')
    torch.set_num_threads(2)
    base_weights = None
    for name, prior in SETTINGS.items():
        cfg = load_config(CONFIG)
        if prior is None:
            cfg.model.pts_bbox_head.pop('mask_center_prior')
        else:
            cfg.model.pts_bbox_head.mask_center_prior.update(prior)
        model = build_model(cfg, None, 'cpu')
        if base_weights is None:
            base_weights = model.state_dict()
            batch = first_batch(cfg, data_root)
        else:
            model.load_state_dict(base_weights, strict=False)
        print(json.dumps(dict(setting=name, **losses(model, batch))), flush=True)


if __name__ == '__main__':
    main(sys.argv[1])
