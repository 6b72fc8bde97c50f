# The centre-cost learning check (`_center-cost`: centre distance in the thing-query matching)
# with the centre loss at 10x, as `_center-loss-x10`. Not the original's: an ablation.
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_center-loss-x10.py']

model = dict(track_criterion=dict(center_cost_weight=0.25))
