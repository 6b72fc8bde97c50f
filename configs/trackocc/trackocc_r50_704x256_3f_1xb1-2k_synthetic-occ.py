# The paper model on the synthetic TrackOcc-Waymo set (tools/create_data.py synthetic): same
# architecture and losses as trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py, network input 704x256,
# every generated frame kept (they are already 0.5 s apart), one GPU, a 2k-iteration schedule.
# Generate the images at or above the input size, e.g. --image-size 960 640.
_base_ = [
    '../_base_/models/trackocc_r50.py',
    '../_base_/datasets/synthetic-waymo.py',
    '../_base_/schedules/cosine-24e.py',
    '../_base_/default_runtime.py',
]

max_iters = 2000
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters,
         eta_min=2e-7),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
# No pretrained weights reach the GPU machine, so the image backbone starts from scratch, and the
# paper's settings for a *pretrained* ResNet-50 would cripple it: a frozen random stem and first
# stage (frozen_stages=1), batch norms that never learn their statistics (norm_eval=True) and the
# backbone at 0.1 x the learning rate. From scratch every stage trains, batch norm learns its
# statistics, and the backbone runs at the full rate (docs/benchmark.md, "Learning check").
model = dict(thing_classes={{_base_.thing_classes}},
             img_backbone=dict(init_cfg=None, frozen_stages=-1, norm_eval=False))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'img_backbone': dict(lr_mult=1.0)}))
# mmdet's ExpMomentumEMA updated in multi-tensor operations (trackocc.engine.averaged_models)
custom_hooks = [dict(type='EMAHook', ema_type='MultiTensorExpMomentumEMA', momentum=0.0002,
                     priority=49)]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=250,
                                     max_keep_ckpts=2))
