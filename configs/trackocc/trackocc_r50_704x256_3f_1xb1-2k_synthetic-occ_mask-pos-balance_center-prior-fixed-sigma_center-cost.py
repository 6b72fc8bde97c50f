# The fixed-spread centre prior (`_center-prior-fixed-sigma`) with the centre distance in the
# thing-query matching (`_center-cost`): the prior confines a query's mask to 1.5 / 1.5 / 1.0 m
# around its predicted centre, and the cost matches fresh queries to objects near that centre,
# so the centre the prior sits on has an object to find nearby. Not the original's: an ablation.
_base_ = [
    './trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_center-prior-fixed-sigma.py'
]

model = dict(track_criterion=dict(center_cost_weight=0.25))
