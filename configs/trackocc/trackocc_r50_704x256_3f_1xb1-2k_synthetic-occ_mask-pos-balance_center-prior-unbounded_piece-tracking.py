# Issue 14's learning check at its goal (docs/benchmark.md, "the centre prior fine-tuned from
# the recipe, with tracked pieces"): the mask-pos-balance recipe with the Gaussian log-prior
# around each thing query's centre *unbounded* (max_penalty None: the spread stays at the object
# scale), trained from the recipe's checkpoint (`load_from`, the second stage of the protocol),
# and at test time every merged thing instance cut into the connected pieces of its class and
# the pieces tracked by their world-frame centroids (PieceTracker). Neither the prior nor the
# pieces are the original's: both are ablations, off in every other config.
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_center-prior.py']

model = dict(
    pts_bbox_head=dict(mask_center_prior=dict(max_penalty=None)),
    piece_tracker=dict(type='PieceTracker', cut='class', connectivity=26, min_voxels=8,
                       max_distance=4.0, match_across_tracks=True))
