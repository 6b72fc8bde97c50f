# The paper model plus sparse-convolution refinement of the mask features at full resolution:
# the voxels the semantic head predicts occupied (not free) go through two spconv SubMConv3d
# residual blocks (shared indice key) and are added back into the 200x200x16 mask features.
_base_ = ['./trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py']

model = dict(refiner=dict(type='SparseVoxelRefiner', in_channels={{_base_.embed_dims}},
                          mid_channels=64, num_blocks=2))
