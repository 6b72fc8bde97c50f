# The synthetic learning check (trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py) with the
# positive voxels of each matched thing mask weighted in the mask BCE (ClipMatcher
# mask_pos_balance): their weight sums to at least 5 % of the mask's negatives. Not the
# original's loss: an ablation for small things, whose masks stay empty in the learning check
# (a 4-voxel pedestrian's positives are ~6e-6 of the grid-averaged BCE, only the dice acts on
# them; docs/benchmark.md, "Learning check, side by side"). Matching costs are unchanged, so the
# two runs of tools/analysis_tools/learning_check.sh ablate differ by this weight only.
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py']

model = dict(track_criterion=dict(type='ClipMatcher', num_classes={{_base_.num_classes}},
                                  mask_pos_balance=0.05))
