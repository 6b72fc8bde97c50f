"""CPU check: how far a trained checkpoint's thing-query centres lie from the voxels the same
queries claim (any learning-check config, with or without the centre prior).

Streams the first FRAMES frames of the held-out set through the checkpoint; for every thing
query of the last decoder layer with a thing-class score above 0.3 it takes the voxels its
mask claims (logit > 0; the head's thing masks, so with the prior where the config has one)
and the distance from its predicted centre (the head's ``thing_centers``, the point the
centre loss trains towards the gt instance's voxel centroid) to their centroid (x-y and z), to
the centroid of the gt instance its mask overlaps most, and to the nearest gt instance
centroid (x-y; the frame's ``gt_occ`` instances).
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
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, num_workers=0,
                                          persistent_workers=False))
    rows = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= frames:
                break
            model.test_step(batch)
            out = seen['out']
            gt = batch['data_samples'][0].video_data_samples[-1].gt_occ
            inst = torch.as_tensor(np.asarray(gt.instances)).reshape(-1)
            ids = [int(v) for v in np.asarray(gt.instance_ids).reshape(-1)]
            gt_masks = torch.stack([inst == v for v in ids]) if ids else None
            gt_centroids = torch.stack([grid[m].mean(0) for m in gt_masks if m.any()]) \
                if ids else None
            scores = out['thing_cls'][-1][0][:, head.thing_classes].float().sigmoid().max(-1)
            masks = out['thing_masks'][-1][0].float().flatten(1) > 0
            centres = out['thing_centers'][-1][0][:, :3].float()
            for q in torch.nonzero(scores.values > 0.3).flatten().tolist():
                claimed = masks[q]
                if not claimed.any():
                    rows.append(dict(frame=i, voxels=0))
                    continue
                offset = grid[claimed].mean(0) - centres[q]
                row = dict(frame=i, voxels=int(claimed.sum()), xy=float(offset[:2].norm()),
                           z=float(offset[2].abs()))
                if gt_masks is not None:
                    overlap = (gt_masks & claimed).sum(1)
                    if overlap.max() > 0:
                        best = grid[gt_masks[int(overlap.argmax())]].mean(0)
                        row['gt_best_xy'] = float((best - centres[q])[:2].norm())
                    row['gt_nearest_xy'] = float(
                        (gt_centroids[:, :2] - centres[q, :2]).norm(dim=-1).min())
                rows.append(row)
    claimed = [r for r in rows if r['voxels']]
    xy = np.array([r['xy'] for r in claimed])

    def median(key):
        values = [r[key] for r in claimed if key in r]
        return round(float(np.median(values)), 2) if values else None

    return dict(checkpoint=checkpoint, options=list(options), frames=frames,
                kept_queries=len(rows), with_voxels=len(claimed),
                claimed_voxels_median=float(np.median([r['voxels'] for r in claimed])),
                centre_to_centroid_xy_median=round(float(np.median(xy)), 2),
                centre_to_centroid_xy_p25_p75=np.percentile(xy, [25, 75]).round(2).tolist(),
                centre_to_centroid_xy_under_2m=round(float((xy < 2).mean()), 3),
                centre_to_centroid_z_median=median('z'),
                centre_to_best_gt_xy_median=median('gt_best_xy'),
                centre_to_nearest_gt_xy_median=median('gt_nearest_xy'))


if __name__ == '__main__':
    args = sys.argv[1:]
    print(json.dumps(main(args[0], args[1], args[2], *(int(v) for v in args[3:4]),
                          options=tuple(args[4:]))))
