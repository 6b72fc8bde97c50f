"""A real learning check on CPU: the tiny TrackOcc overfits one constructed 3-frame clip.

What it asserts, and why in this form (issue 13). The clip holds road, a building, a moving
6-voxel vehicle and a 2-voxel pedestrian; after 150 AdamW steps the loss falls >20x and the
semantic mIoU of the streamed frames rises far above the untrained model's. Tracking is
checked on the tracks themselves: the live track whose mask best covers the vehicle is the
same track, with the same id, in all three frames, and the panoptic output never gives the
vehicle's voxels another track's id.

An earlier version asserted that the *merged* panoptic output labels the vehicle with one id
in every frame. That failed on other CPUs ([0, 0, 0]) while the tracking was right: the
vehicle's track kept one id in all frames, but the building's stuff query still covered the
6 vehicle voxels with a higher class score, and the panoptic merge (Mask2Former rule, the
original's too: a voxel goes to the highest ``score * mask_prob``, a segment that keeps less
than 70 % of its own mask is dropped) gave them to the building. Whether the building query
has learned to exclude those 6 voxels after 150 steps depends on the float trajectory (its
mask BCE is averaged over the whole grid and 6 extra voxels barely move its dice loss):
seen on an AMD EPYC with different seeds and thread counts, with constant and cosine
learning rates, both outcomes occur. The claim "the vehicle keeps its id" does not depend
on that race, so it is asserted where it lives.
"""
import time
from typing import Optional

import numpy as np
import pytest
import torch

from test_detector import build, images, make_clip, make_frame, tiny_cfg

VEHICLE_ID = 11  # gt instance id of the moving vehicle in make_frame


def stream(model, frames, imgs):
    """Stream the frames; per frame the panoptic output and the live tracks' masks.

    Returns a list of dicts: ``semantics``/``instances`` (X, Y, Z) long, ``track_ids`` (L,)
    and ``track_masks`` (L, X*Y*Z) bool of the live tracks the merge receives.
    """
    model.eval()
    merge = model._merge
    seen = []

    def recording_merge(tracks, out):
        live = model.tracker.output_mask(tracks)
        masks = out['thing_masks'][-1][0].flatten(1)[live].sigmoid() >= 0.5
        seen.append(dict(track_ids=tracks.obj_idxes[live].clone(), track_masks=masks))
        return merge(tracks, out)

    model._merge = recording_merge
    try:
        with torch.no_grad():
            for t in range(len(frames)):
                sample = make_clip([make_frame(t, start=(t == 0))])
                out = model.predict(dict(imgs=imgs[:, t:t + 1]), [sample])
                pred = out[0].video_data_samples[0].pred_occ
                seen[t].update(semantics=pred.semantics.long(), instances=pred.instances.long())
    finally:
        del model._merge  # back to the class's method
    return seen


def balanced_model(mask_pos_balance: float, seed: int, criterion: Optional[dict] = None,
                   **head_options):
    """The tiny detector with ``ClipMatcher(mask_pos_balance=..., **criterion)`` and
    ``head_options`` in its head config, its weights initialised from ``seed`` (the
    mask-weight experiments of docs/benchmark_runs/)."""
    cfg = tiny_cfg()
    cfg['track_criterion'] = dict(type='ClipMatcher', num_classes=16,
                                  mask_pos_balance=mask_pos_balance, **(criterion or {}))
    cfg['pts_bbox_head'].update(head_options)
    model = build(cfg)
    torch.manual_seed(seed)
    model.init_weights()
    return model


def overfit_step(model, opt, imgs, frames, terms: Optional[dict] = None) -> float:
    """One training step on the clip (gradient norm clipped at 35, as the configs); the loss.
    ``terms``: filled with the step's loss terms (floats) if given."""
    model.train()
    losses = model.loss(dict(imgs=imgs), [make_clip(frames)])
    loss = sum(losses.values())
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
    opt.step()
    if terms is not None:
        terms.update((k, float(v.detach())) for k, v in losses.items())
    return float(loss.detach())


def balance_experiment(balance: float, seed: int, steps: int, frames, record,
                       **head_options) -> dict:
    """A mask-weight experiment of docs/benchmark_runs/: ``balanced_model(balance, seed,
    **head_options)`` overfits ``frames`` with AdamW (one thread, denormals flushed) for
    ``steps``; every 25 steps the frames are streamed and ``record(preds, step, loss)`` gives
    the step's dict."""
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    model = balanced_model(balance, seed, **head_options)
    imgs = images(1, 3, seed=5 + seed)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    records, start = [], time.time()
    for step in range(1, steps + 1):
        loss = overfit_step(model, opt, imgs, frames)
        if step % 25 == 0:
            records.append(record(stream(model, frames, imgs), step, loss))
    return dict(balance=balance, seed=seed, s=round(time.time() - start, 1), rec=records)


def semantic_miou(preds, frames):
    ious = []
    for c in frames[0].gt_occ.semantics.unique().tolist():
        inter = sum(((p['semantics'] == c) & (f.gt_occ.semantics == c)).sum().item()
                    for p, f in zip(preds, frames))
        union = sum(((p['semantics'] == c) | (f.gt_occ.semantics == c)).sum().item()
                    for p, f in zip(preds, frames))
        ious.append(inter / union)
    return float(np.mean(ious))


def vehicle_tracks(preds, frames):
    """Per frame: (id, IoU) of the live track whose mask best matches the vehicle."""
    best = []
    for p, f in zip(preds, frames):
        gt = (f.gt_occ.instances == VEHICLE_ID).flatten()
        masks = p['track_masks']
        if len(masks) == 0:
            best.append((-1, 0.0))
            continue
        iou = (masks & gt).sum(1) / (masks | gt).sum(1).clamp(min=1)
        k = int(iou.argmax())
        best.append((int(p['track_ids'][k]), float(iou[k])))
    return best


@pytest.fixture
def one_thread():
    # A single thread avoids the OpenMP pool's slow path on tiny denormal gradients late in
    # training (seen here: 20x slower steps with 2 threads).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def test_tiny_model_overfits_one_clip_and_keeps_the_vehicle_id(one_thread):
    torch.manual_seed(0)
    model = build()
    frames = [make_frame(t, start=(t == 0)) for t in range(3)]
    imgs = images(1, 3, seed=5)
    miou_before = semantic_miou(stream(model, frames, imgs), frames)

    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    first = last = None
    for _ in range(150):
        last = overfit_step(model, opt, imgs, frames)
        first = last if first is None else first

    after = stream(model, frames, imgs)
    miou_after = semantic_miou(after, frames)
    assert last < first / 20, (first, last)
    assert miou_before < 0.35 and miou_after > 0.55, (miou_before, miou_after)
    # one track follows the vehicle through the clip, with one id
    tracked = vehicle_tracks(after, frames)
    ids = [track_id for track_id, _ in tracked]
    assert ids[0] >= 0 and ids == [ids[0]] * 3, tracked
    assert min(iou for _, iou in tracked) >= 0.25, tracked  # seen: 0.5-1.0; untrained ~0.01
    # and no other track's id lands on the vehicle in the panoptic output (0 = not a thing)
    for p, f in zip(after, frames):
        on_vehicle = set(p['instances'][f.gt_occ.instances == VEHICLE_ID].tolist())
        assert on_vehicle <= {0, ids[0] + 1}, (on_vehicle, ids)
