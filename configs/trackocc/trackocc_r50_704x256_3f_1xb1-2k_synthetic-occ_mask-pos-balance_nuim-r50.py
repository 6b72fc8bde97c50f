# The learning check's recipe (..._synthetic-occ_mask-pos-balance.py, 2 clips per iteration in
# docs/benchmark.md) with the paper's image backbone start: the nuImages Cascade Mask R-CNN
# ResNet-50, frozen stem and first stage, batch-norm statistics kept, the backbone at 0.1 x the
# learning rate. For a machine that cannot download it, publish its backbone once where it can
# (45 MiB in fp16) and point the config at the file:
#   python tools/model_converters/publish_model.py CASCADE_NUIM.pth nuim_r50.pth \
#       --only backbone. --dtype fp16
#   ... --cfg-options model.img_backbone.init_cfg.checkpoint=nuim_r50-<hash>.pth
_base_ = ['./trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py']

model = dict(img_backbone=dict(
    init_cfg=dict(_delete_=True, type='Pretrained', checkpoint={{_base_.nuimages_r50}},
                  prefix='backbone.'),
    frozen_stages=1, norm_eval=True))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=0.1)}))
