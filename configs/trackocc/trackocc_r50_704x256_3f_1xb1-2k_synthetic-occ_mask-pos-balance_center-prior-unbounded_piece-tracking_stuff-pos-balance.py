# The goal config (`..._center-prior-unbounded_piece-tracking.py`) with the stuff segments'
# positive voxels weighted in the mask BCE as the things' already are (StuffMaskLoss
# mask_pos_balance 0.05: a segment's positives weigh at least 5 % of its negatives). Why: on
# seven held-out seeds the goal checkpoint's stuff queries name pole and tree trunk in every
# frame (class score up to 0.97 / 0.94) but their masks never reach 0.5 (merge audit:
# `empty_mask` in 60 of 60 frames; below 0.1 on every voxel in the sequence where the audit
# measured it), so 7 of the 14 scored classes stay at IoU 0 and mIoU is
# half the mean of the learnt classes (docs/benchmark.md, "the goal on seven seeds"). Road,
# walkable, building keep weight 1. Not the original's loss: an ablation, trained as the second
# stage from the recipe (`load_from`) like the goal config. Trained once (one H200, stage 2 of
# 750 iterations, docs/benchmark.md "the stuff masks weighted"): pole / tree trunk / bicycle
# IoU 0 -> 10.8 / 7.8 / 8.6 and mIoU 34.20 on the seven seeds, but vehicle / pedestrian IoU
# and AQ lower (15.68), OccSTQ 23.12: not (yet) better than the goal config.
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_'
          'center-prior-unbounded_piece-tracking.py']

model = dict(pts_bbox_head=dict(loss_stuff=dict(type='StuffMaskLoss', mask_pos_balance=0.05)))
