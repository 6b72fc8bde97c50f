# The mask-pos-balance learning check with a locality term in the thing-query matching: the L1
# distance (metres) from a query's predicted centre to a gt instance's voxel centroid, 0.25 per
# metre (ClipMatcher center_cost_weight; DETR3D's box-centre cost), beside the original's class,
# mask BCE and dice costs. The original matches on masks only, so a fresh query can be assigned
# an object anywhere in the grid and its centre must regress there from a reference point far
# away. Not the original's: an ablation of that one cost against the recipe.
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py']

model = dict(track_criterion=dict(center_cost_weight=0.25))
