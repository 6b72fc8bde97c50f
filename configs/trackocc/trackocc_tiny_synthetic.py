# The paper architecture at a size that trains on a CPU: ResNet-18-like image backbone with
# 16 base channels, 32-d embeddings, 8 view-transformer channels, 20 thing + 8 stuff queries,
# 5 cameras at 352x128, on the synthetic TrackOcc-Waymo set (data/synthetic-waymo, `make demo`).
# Same grid (200x200x16 at 0.4 m), same depth bins, losses, tracker and schedule shape.
_base_ = [
    '../_base_/models/trackocc_r50.py',
    '../_base_/datasets/synthetic-waymo.py',
    '../_base_/schedules/cosine-24e.py',
    '../_base_/default_runtime.py',
]

embed_dims = 32
numC_Trans = 8
num_thing_queries = 20
num_stuff_queries = 8
input_size = (128, 352)

model = dict(
    thing_classes={{_base_.thing_classes}},
    num_thing_queries=num_thing_queries,
    embed_dims=embed_dims,
    img_backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False,
                      init_cfg=None),
    img_neck=dict(in_channels=[16, 32, 64, 128], out_channels=embed_dims),
    img_view_transformer=dict(input_size=input_size, in_channels=embed_dims,
                              out_channels=numC_Trans,
                              depthnet_cfg=dict(use_dcn=False, aspp_mid_channels=16)),
    volume_encoder_backbone=dict(numC_input=numC_Trans, num_layer=[1, 1, 1],
                                 num_channels=[numC_Trans, numC_Trans * 2, numC_Trans * 4]),
    volume_encoder_neck=dict(in_channels=numC_Trans * 7, out_channels=numC_Trans),
    occ_encoder=dict(
        in_channels=numC_Trans, embed_dims=embed_dims,
        positional_encoding=dict(num_feats=[12, 12, 8]),
        layer_cfg=dict(self_attn_cfg=dict(num_heads=4, num_levels=1, num_points=4),
                       cross_attn_cfg=dict(num_heads=4, num_points=4),
                       ffn_cfg=dict(feedforward_channels=embed_dims * 2, ffn_drop=0.1))),
    pts_bbox_head=dict(embed_dims=embed_dims, num_stuff_queries=num_stuff_queries,
                       sem_hidden_channels=16,
                       decoder=dict(num_heads=4)),
    query_interaction=dict(embed_dims=embed_dims, num_heads=4),
    memory_bank=dict(embed_dims=embed_dims, num_heads=4),
)

# CPU-friendly schedule: short warm-up, cosine over `max_iters`, fp32, plain BN.
max_iters = 200
optim_wrapper = dict(type='HostSyncFreeOptimWrapper', _delete_=True,
                     constructor='MergedGroupsOptimWrapperConstructor',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
                     paramwise_cfg=dict(custom_keys={'sampling_offsets': dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters,
         eta_min=1e-6),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(by_epoch=False, interval=max_iters))
env_cfg = dict(dist_cfg=dict(backend='gloo'))

# the data set's pipelines at the tiny input size
data_config = dict(
    cams={{_base_.cams}}, input_size=input_size, resize={{_base_.data_config.resize}},
    rot={{_base_.data_config.rot}}, flip={{_base_.data_config.flip}},
    crop_h={{_base_.data_config.crop_h}}, resize_test={{_base_.data_config.resize_test}})
train_img_aug = dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=True,
                     draw={{_base_.img_aug_draw}}, resample={{_base_.img_resample}})
test_img_aug = dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=False,
                    resample={{_base_.img_resample}})
train_pipeline = [
    dict(type='TransformBroadcaster', share_random_params=True,
         transforms=[{{_base_.load_images}}, train_img_aug, {{_base_.load_points}},
                     {{_base_.points_to_depth}}, {{_base_.load_occ}}]),
    {{_base_.pack_train}},
]
test_pipeline = [
    dict(type='TransformBroadcaster', share_random_params=True,
         transforms=[{{_base_.load_images}}, test_img_aug, {{_base_.load_occ}}]),
    {{_base_.pack_test}},
]
# a CPU config: no pinned memory (the base's pin_memory would only warn without a GPU)
train_dataloader = dict(num_workers=1, persistent_workers=False, pin_memory=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, persistent_workers=False, pin_memory=False,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
