"""CPU check: where a trained checkpoint's thing-query centres lie against the voxels the same
queries claim, and, with the centre prior, what spread it learnt and what it does there (any
learning-check config).

Streams the first FRAMES frames of the held-out set through the checkpoint. For every thing
query of the last decoder layer with a thing-class score above 0.3 it takes the voxels its
mask claims (the head's thing mask logits > 0, the prior included where the config has one)
and measures the x-y distance from its predicted centre (``thing_centers``: what the centre
loss pulls to its gt instance's voxel centroid) to their centroid (and |dz|), to the centroid
of the gt instance the mask overlaps most and to the nearest gt instance centroid (the frame's
``gt_occ``). With a prior: the query's spread, the prior at the claimed voxels, the share of
them on the flat ``-max_penalty`` and the mask logit there without the prior.
CFG_OPTIONS: ``key=value`` overrides (e.g. the unbounded run's
``model.pts_bbox_head.mask_center_prior.max_penalty=None``). Run from the repository root:

    python docs/benchmark_runs/center_prior_bounded_h200_2026-12-02/centre_error.py \
        CONFIG CHECKPOINT VAL_ROOT [FRAMES [CFG_OPTIONS...]]
"""
import json
import sys

import numpy as np
import torch

from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.models.losses.thing_targets import voxel_centers


def gt_centroids(gt_occ, grid):
    """(K, X*Y*Z) bool masks and (K, 3) voxel centroids of the frame's gt instances."""
    inst = torch.as_tensor(np.asarray(gt_occ.instances)).reshape(-1)
    ids = torch.as_tensor(np.asarray(gt_occ.instance_ids)).reshape(-1, 1)
    masks = inst[None] == ids
    masks = masks[masks.any(1)]
    return masks, (masks.float() @ grid) / masks.sum(1, keepdim=True)


def query_rows(out, prior, grid, gt, thing_classes, max_penalty):
    """One dict per kept thing query of the last decoder layer."""
    scores = out['thing_cls'][-1][0][:, thing_classes].float().sigmoid().max(-1).values
    logits = out['thing_masks'][-1][0].float().flatten(1)
    centres = out['thing_centers'][-1][0][:, :3].float()
    gt_masks, gt_centres = gt
    rows = []
    for q in torch.nonzero(scores > 0.3).flatten().tolist():
        claimed = logits[q] > 0
        row = dict(voxels=int(claimed.sum()))
        if prior is not None:
            row['sigma'] = prior['sigma'][0, q].tolist()
        if not claimed.any():
            rows.append(row)
            continue
        offset = grid[claimed].mean(0) - centres[q]
        row.update(xy=float(offset[:2].norm()), z=float(offset[2].abs()))
        if len(gt_masks):
            overlap = (gt_masks & claimed).sum(1)
            if overlap.max() > 0:
                best = gt_centres[int(overlap.argmax())]
                row['gt_best_xy'] = float((best - centres[q])[:2].norm())
            row['gt_nearest_xy'] = float((gt_centres[:, :2] - centres[q, :2]).norm(dim=-1).min())
        if prior is not None:
            at = prior['value'][0, q].flatten()[claimed].float()
            row['prior'] = float(at.median())
            row['logit_without_prior'] = float((logits[q][claimed] - at).median())
            if max_penalty is not None:
                row['flat_share'] = float((at < -0.9 * max_penalty).float().mean())
        rows.append(row)
    return rows


def main(config: str, checkpoint: str, val_root: str, frames: int = 4,
         options: tuple = ()) -> dict:
    quiet_logger('centre_error')
    overrides = {'test_dataloader.dataset.data_root': val_root}
    for option in options:
        key, value = option.split('=', 1)
        overrides[key] = None if value == 'None' else float(value)
    cfg = load_config(config, overrides)
    model = build_model(cfg, checkpoint, 'cpu').eval()
    head = model.pts_bbox_head
    grid = voxel_centers(head.occ_size, head.pc_range, 'cpu')  # (X*Y*Z, 3)
    seen = {}
    head.register_forward_hook(lambda module, args, out: seen.update(out=out))
    prior_module = head.mask_center_prior
    if prior_module is not None:  # its last call in a forward is the last decoder layer's
        prior_module.register_forward_hook(lambda module, args, out: seen.update(
            prior=dict(sigma=module.sigma(args[0]), value=out)))
    max_penalty = None if prior_module is None else prior_module.max_penalty
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, num_workers=0,
                                          persistent_workers=False))
    rows = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= frames:
                break
            model.test_step(batch)
            gt = gt_centroids(batch['data_samples'][0].video_data_samples[-1].gt_occ, grid)
            rows += query_rows(seen['out'], seen.get('prior'), grid, gt, head.thing_classes,
                               max_penalty)
    claimed = [r for r in rows if r['voxels']]

    def median(key):
        values = [r[key] for r in claimed if key in r]
        return round(float(np.median(values)), 2) if values else None

    xy = np.array([r['xy'] for r in claimed])
    summary = dict(checkpoint=checkpoint, options=list(options), frames=frames,
                   kept_queries=len(rows), with_voxels=len(claimed),
                   claimed_voxels_median=median('voxels'),
                   centre_to_centroid_xy_median=median('xy'),
                   centre_to_centroid_xy_p25_p75=np.percentile(xy, [25, 75]).round(2).tolist(),
                   centre_to_centroid_xy_under_2m=round(float((xy < 2).mean()), 3),
                   centre_to_centroid_z_median=median('z'),
                   centre_to_best_gt_xy_median=median('gt_best_xy'),
                   centre_to_nearest_gt_xy_median=median('gt_nearest_xy'))
    if prior_module is not None:
        sigma = np.array([r['sigma'] for r in rows])
        summary.update(max_penalty=max_penalty,
                       sigma_median=np.median(sigma, 0).round(3).tolist(),
                       sigma_p10_p90=np.percentile(sigma, [10, 90], 0).round(3).tolist(),
                       prior_at_claimed_median=median('prior'),
                       flat_share_median=median('flat_share'),
                       logit_without_prior_at_claimed_median=median('logit_without_prior'))
    return summary


if __name__ == '__main__':
    args = sys.argv[1:]
    print(json.dumps(main(args[0], args[1], args[2], *(int(v) for v in args[3:4]),
                          options=tuple(args[4:]))))
