# The schedule the original's config asked for (mmcv CosineAnnealing with a linear warm-up) but
# never ran (its learning rate stayed constant, see ./constant-24e.py, whose optimizer, AMP,
# gradient clipping and iteration counts this file keeps): 500 linear warm-up iterations from
# 1/3, cosine to 1e-3 x lr over the whole run; validation and testing in fp32.
_base_ = ['./constant-24e.py']

param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end={{_base_.max_iters}},
         T_max={{_base_.max_iters}}, eta_min=2e-7),  # 1e-3 x base_lr
]

val_cfg = dict(_delete_=True, type='ValLoop')
test_cfg = dict(_delete_=True, type='TestLoop')
