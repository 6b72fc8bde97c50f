# The synthetic learning check (trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py) with the
# sparse-convolution refinement of the full-resolution mask features (as in
# trackocc_r50_704x256_3f_8xb1-24e_waymo-occ_sparse-refine.py): same data, schedule and backbone
# settings, so the two runs of tools/analysis_tools/learning_check.sh differ by the refiner only.
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py']

model = dict(refiner=dict(type='SparseVoxelRefiner', in_channels={{_base_.embed_dims}},
                          mid_channels=64, num_blocks=2))
