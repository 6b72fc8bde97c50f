"""CPU experiment: does ClipMatcher(mask_pos_balance) make the small pedestrian's mask appear
sooner when the tiny TrackOcc overfits the constructed clip? Per balance and seed: every 25
AdamW steps, stream the 3 frames and take, per frame, the best IoU of a live track's mask
(p >= 0.5) with the pedestrian and with the vehicle."""
import json, sys, time
sys.path.insert(0, 'tests/models'); sys.path.insert(0, 'tests')
import torch
from test_detector import build, images, make_clip, make_frame, tiny_cfg
from test_overfit_clip import stream
torch.set_num_threads(1); torch.set_flush_denormal(True)

def best_iou(preds, frames, iid):
    out = []
    for p, f in zip(preds, frames):
        gt = (f.gt_occ.instances == iid).flatten()
        m = p['track_masks']
        out.append(0.0 if len(m) == 0 else float(((m & gt).sum(1) / (m | gt).sum(1).clamp(min=1)).max()))
    return out

balance, seed, steps = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = tiny_cfg()
cfg['track_criterion'] = dict(type='ClipMatcher', num_classes=16, mask_pos_balance=balance)
model = build(cfg)
torch.manual_seed(seed)
model.init_weights()  # seed-dependent initial weights
frames = [make_frame(t, start=(t == 0)) for t in range(3)]
ids = frames[0].gt_occ.instance_ids.tolist(); labels = frames[0].gt_occ.instance_labels.tolist()
ped = [i for i, l in zip(ids, labels) if l == 2][0]; veh = [i for i, l in zip(ids, labels) if l == 1][0]
imgs = images(1, 3, seed=5 + seed)
opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
rec = []; t0 = time.time()
for step in range(1, steps + 1):
    model.train()
    losses = model.loss(dict(imgs=imgs), [make_clip(frames)])
    loss = sum(losses.values()); opt.zero_grad(); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 35); opt.step()
    if step % 25 == 0:
        preds = stream(model, frames, imgs)
        rec.append(dict(step=step, ped=best_iou(preds, frames, ped), veh=best_iou(preds, frames, veh),
                        ped_voxels=[int((f.gt_occ.instances == ped).sum()) for f in frames],
                        loss=float(loss)))
print(json.dumps(dict(balance=balance, seed=seed, s=round(time.time() - t0, 1), rec=rec)))
