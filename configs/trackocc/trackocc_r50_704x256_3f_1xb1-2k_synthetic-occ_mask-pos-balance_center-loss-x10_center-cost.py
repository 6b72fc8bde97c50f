# The centre-loss-x10 learning check with a locality term in the thing-query matching: the L1
# distance (metres) from a query's predicted centre to a gt instance's voxel centroid, 0.25 per
# metre (DETR3D's box-centre cost), beside the original's class, mask BCE and dice costs. The
# original matches on masks only, so a fresh query can be assigned an object anywhere in the
# grid and its centre must regress there from a reference point far away. Not the original's:
# an ablation of that one cost.
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_center-loss-x10.py']

model = dict(track_criterion=dict(assigner=dict(
    type='mmdet.HungarianAssigner',
    match_costs=[
        dict(type='mmdet.FocalLossCost', weight=4.0),
        dict(type='VoxelMaskCrossEntropyCost', weight=5.0, normalizer='grid'),
        dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0),
        dict(type='CenterL1Cost', weight=0.25),
    ])))
