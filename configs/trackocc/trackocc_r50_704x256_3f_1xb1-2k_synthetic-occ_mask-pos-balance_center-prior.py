# The mask-pos-balance learning check with a Gaussian log-prior around each thing query's
# predicted centre added to its mask logits (TrackOccHead mask_center_prior; per query and axis
# spread learned from its decoder output, starting at 1.5 / 1.5 / 1.0 m; the penalty levels off
# at 8 logits far from the centre). Not the original's: an ablation for the measured limit of
# the learning check, one query's mask covering several neighbouring objects of its class
# (docs/benchmark.md, "a Gaussian prior around each thing query's centre"; trained with
# max_penalty=None, then bounded as here: "the centre prior bounded", where the learnt spread
# shrank to ~0.28 m and the prior became a flat -8; `_center-prior-fixed-sigma` keeps it).
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py']

model = dict(pts_bbox_head=dict(mask_center_prior=dict(init_sigma=(1.5, 1.5, 1.0),
                                                       min_sigma=0.2, max_penalty=8.0)))
