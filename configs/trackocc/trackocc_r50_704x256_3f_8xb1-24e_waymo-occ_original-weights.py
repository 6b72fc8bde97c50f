# The paper model set up for weights converted from the original TrackOcc
# (tools/model_converters/trackocc_original_to_mmengine.py), e.g. its released
# trackocc_r50_704x256_3inst_3f_8gpu.pth (README, "Using the released checkpoint").
_base_ = ['./trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py']

# The paper config already computes what the original computed (its model switches are the
# original's, configs/_base_/models/trackocc_r50.py); converted weights only need the image
# backbone left alone instead of initialised from the nuImages checkpoint.
model = dict(img_backbone=dict(init_cfg=None))
