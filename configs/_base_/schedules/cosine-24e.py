# The schedule the original's config asked for (mmcv CosineAnnealing with a linear warm-up) but
# never ran (its learning rate stayed constant, see ./constant-24e.py): AdamW 2e-4 (x0.1 for the
# image backbone and sampling offsets), weight decay 0.01, grad clip 35, 500 linear warm-up
# iterations from 1/3, cosine to 1e-3 x lr, iteration-based (24 epochs of
# `num_iters_per_epoch`), AMP with dynamic loss scale.
num_epochs = 24
num_iters_per_epoch = 31617 // 8  # Waymo train clips / (8 GPUs x 1 clip)
max_iters = num_epochs * num_iters_per_epoch
base_lr = 2e-4

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'img_backbone': dict(lr_mult=0.1),
        'sampling_offsets': dict(lr_mult=0.1),
    }),
    clip_grad=dict(max_norm=35, norm_type=2),
)

param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters,
         eta_min=base_lr * 1e-3),
]

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=12 * num_iters_per_epoch)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=False, base_batch_size=8)
