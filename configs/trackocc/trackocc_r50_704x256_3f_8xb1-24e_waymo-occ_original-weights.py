# The paper model set up for weights converted from the original TrackOcc
# (tools/model_converters/trackocc_original_to_mmengine.py), e.g. its released
# trackocc_r50_704x256_3inst_3f_8gpu.pth. Every switch where this package's model would compute
# something else than the original with the same weights is set to the original's behaviour
# here, whatever the paper config's default is (docs/deviations.md).
_base_ = ['./trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py']

model = dict(
    # track scores over the original detector's default inst_class_ids (sign included)
    track_score_classes=[1, 2, 3, 4],
    # the original normalised a PIL RGB image with mmcv's to_rgb=True, i.e. fed BGR with the RGB
    # mean / std; the loader here gives RGB, so swap before normalising
    data_preprocessor=dict(bgr_to_rgb=False, rgb_to_bgr=True),
    # all weights come from the converted checkpoint
    img_backbone=dict(init_cfg=None),
    # metres -> voxel index by truncation toward zero; frustum columns at linspace(0, W - 1, w)
    img_view_transformer=dict(legacy_voxel_index=True, frustum_at_cell_centres=False),
    # the original's 3D deformable attention sampled with x and z swapped (grid_sample order)
    occ_encoder=dict(layer_cfg=dict(self_attn_cfg=dict(legacy_axis_order=True))),
    pts_bbox_head=dict(decoder=dict(
        legacy_axis_order=True,
        # self-attention residual = cross-attention output before norms[0]
        self_attn_residual='cross_attn_out')),
)
