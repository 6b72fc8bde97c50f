"""The paper config's losses with the feature networks once per clip and frame by frame.

    python docs/benchmark_runs/clip_feature_batch_cpu_2026-12-04/compare_losses.py CONFIG \
        > compare_losses.json

One model (random weights, seed 0), one synthetic 3-frame clip, dropout off (p = 0, so the
two passes draw the same random track drops and false positives), gradients off (memory):
``model.loss`` with ``clip_feature_batch=False`` and then ``True``, the random generator
seeded the same before each. Prints every loss term of both and the largest relative
difference. Needs ~20 GB of memory for the paper config.
"""
import json
import sys

import torch

from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.utils.synthetic_inputs import synthetic_batch


def main():
    cfg = load_config(sys.argv[1])
    quiet_logger()
    model = build_model(cfg, None, 'cpu').train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    data = model.data_preprocessor(synthetic_batch(model, 3, with_gt=True), True)
    losses = {}
    for batched in (False, True):
        model.clip_feature_batch = batched
        torch.manual_seed(3)
        with torch.no_grad():
            out = model(**data, mode='loss')
        losses[batched] = {k: float(v) for k, v in out.items()}
    per_frame, clip = losses[False], losses[True]
    rel = {k: abs(clip[k] - v) / max(abs(v), 1e-12) for k, v in per_frame.items()}
    worst = max(rel, key=rel.get)
    print(json.dumps(dict(config=sys.argv[1], per_frame=per_frame, clip_batch=clip,
                          max_relative_difference=rel[worst], worst_term=worst,
                          same_terms=sorted(per_frame) == sorted(clip)), indent=1))


if __name__ == '__main__':
    main()
