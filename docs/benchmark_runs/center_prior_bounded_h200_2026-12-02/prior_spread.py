"""CPU check: what spread a trained MaskCenterPrior predicts, and where the voxels its kept
thing queries claim lie on the prior.

Streams the first FRAMES frames of the held-out set (sequence 1000) through the checkpoint,
and for every thing query of the last decoder layer with a thing-class score above 0.3 records its
spread, the voxels it claims (mask logit + prior > 0), the prior there, the mask logit
without the prior there, and how far its predicted centre is from the centroid of those voxels
(x-y distance and |dz|, metres). MAX_PENALTY: the bound the checkpoint was trained with (`none`:
unbounded). Run from the repository root:

    python docs/benchmark_runs/center_prior_bounded_h200_2026-12-02/prior_spread.py \
        CONFIG CHECKPOINT VAL_ROOT MAX_PENALTY [FRAMES]
"""
import json
import sys

import numpy as np
import torch

import trackocc.models.heads.trackocc_head as head_module
from trackocc.analysis.model_setup import build_model, load_config, quiet_logger


def main(config: str, checkpoint: str, val_root: str, bound: str, frames: int = 4) -> dict:
    quiet_logger('prior_spread')
    cfg = load_config(config, {
        'test_dataloader.dataset.data_root': val_root,
        'model.pts_bbox_head.mask_center_prior.max_penalty':
            None if bound == 'none' else float(bound)})
    model = build_model(cfg, checkpoint, 'cpu').eval()
    prior_module = model.pts_bbox_head.mask_center_prior
    seen = {}
    mask_logits, prior_forward = head_module.mask_logits, prior_module.forward

    def record_masks(*args):
        seen['masks'] = mask_logits(*args)  # the last call is the last decoder layer's
        return seen['masks']

    def record_prior(query, centers):
        seen['prior'] = prior_forward(query, centers)
        seen['sigma'] = prior_module.sigma(query)
        seen['centers'] = centers[..., :3].float()
        cls = model.pts_bbox_head.cls_embed(query)[..., model.pts_bbox_head.thing_classes]
        seen['score'] = cls.sigmoid().max(-1).values  # the tracker's score
        return seen['prior']

    head_module.mask_logits, prior_module.forward = record_masks, record_prior
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, num_workers=0,
                                          persistent_workers=False))
    axes = [getattr(prior_module, f'voxel_centres_{a}') for a in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)  # (XYZ, 3)
    rows = []
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= frames:
                    break
                model.test_step(batch)
                prior = seen['prior'][0].float()
                raw = seen['masks'][0, :prior.shape[0]].float()
                for q in torch.nonzero(seen['score'][0] > 0.3).flatten().tolist():
                    claimed = (raw[q] + prior[q]).flatten() > 0
                    at = prior[q].flatten()[claimed]
                    offset = (grid[claimed].mean(0) - seen['centers'][0, q]) if len(at) else None
                    rows.append(dict(
                        frame=i, sigma=seen['sigma'][0, q].tolist(), voxels=int(claimed.sum()),
                        prior_median=float(at.median()) if len(at) else None,
                        flat_share=float((at < -0.9 * float(bound)).float().mean())
                        if len(at) and bound != 'none' else None,
                        logit_median=float(raw[q].flatten()[claimed].median())
                        if len(at) else None,
                        centre_offset_xy=float(offset[:2].norm()) if len(at) else None,
                        centre_offset_z=float(offset[2].abs()) if len(at) else None))
    finally:
        head_module.mask_logits = mask_logits
    sigma = np.array([r['sigma'] for r in rows])
    claimed = [r for r in rows if r['voxels']]

    def median(key):
        values = [r[key] for r in claimed if r[key] is not None]
        return float(np.median(values)) if values else None

    return dict(checkpoint=checkpoint, max_penalty=bound, frames=frames, kept_queries=len(rows),
                sigma_median=np.median(sigma, 0).round(3).tolist(),
                sigma_p10=np.percentile(sigma, 10, 0).round(3).tolist(),
                sigma_p90=np.percentile(sigma, 90, 0).round(3).tolist(),
                claimed_voxels_median=float(np.median([r['voxels'] for r in rows])),
                prior_at_claimed_median=median('prior_median'),
                flat_share_median=median('flat_share'),
                logit_at_claimed_median=median('logit_median'),
                centre_to_claimed_centroid_xy_median=median('centre_offset_xy'),
                centre_to_claimed_centroid_z_median=median('centre_offset_z'))


if __name__ == '__main__':
    print(json.dumps(main(*sys.argv[1:5], *[int(v) for v in sys.argv[5:6]])))
