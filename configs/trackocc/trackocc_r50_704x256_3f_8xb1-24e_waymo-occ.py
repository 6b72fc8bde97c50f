# TrackOcc (ICRA 2025), the paper model: ResNet-50 + FPN, 5 cameras at 704x256, LSS to a
# 200x200x16 volume, 3D ResNet + FPN to 50x50x16, occupancy encoder, 200 thing (track) + 50 stuff
# queries, 3-frame clips, 24 epochs on 8 GPUs x 1 clip, AdamW 2e-4, AMP, SyncBN, EMA.
_base_ = [
    '../_base_/models/trackocc_r50.py',
    '../_base_/datasets/waymo-trackocc.py',
    '../_base_/schedules/cosine-24e.py',
    '../_base_/default_runtime.py',
]

# SyncBN across GPUs (the original: sync_bn=True); EMA of the weights (the original's MEGVII EMA).
sync_bn = 'torch'
custom_hooks = [dict(type='EMAHook', ema_type='mmdet.ExpMomentumEMA', momentum=0.0002, priority=49)]
default_hooks = dict(checkpoint=dict(interval={{_base_.num_iters_per_epoch}} * 12))
# ImageNet-pretrained backbone (the original starts from an nuImages Mask R-CNN; see docs/deviations.md)
