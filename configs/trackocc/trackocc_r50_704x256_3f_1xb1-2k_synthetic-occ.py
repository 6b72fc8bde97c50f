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

input_size = (256, 704)
data_config = dict(
    cams=['CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_SIDE_LEFT', 'CAM_SIDE_RIGHT'],
    input_size=input_size, src_size=(640, 960), resize=(-0.06, 0.11), rot=(-5.4, 5.4), flip=True,
    crop_h=(0.0, 0.0), resize_test=0.0)
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='TransformBroadcaster', share_random_params=True, transforms=[
        dict(type='LoadMultiViewImages', cams=data_config['cams']),
        dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=True),
        dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=3),
        dict(type='PointsToMultiViewDepth', depth_range=(2.0, 42.0)),
        dict(type='LoadPanopticOccupancy', thing_classes=[1, 2, 4], table_mask='mask_camera'),
    ]),
    dict(type='PackTrackOccInputs', keys=('img', 'gt_occ', 'gt_depth')),
]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(type='TransformBroadcaster', share_random_params=True, transforms=[
        dict(type='LoadMultiViewImages', cams=data_config['cams']),
        dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=False),
        dict(type='LoadPanopticOccupancy', thing_classes=[1, 2, 4], table_mask='mask_camera'),
    ]),
    dict(type='PackTrackOccInputs', keys=('img', 'gt_occ')),
]))
test_dataloader = val_dataloader

max_iters = 2000
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=200),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters,
         eta_min=2e-7),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
model = dict(img_backbone=dict(init_cfg=None))  # no weights can be downloaded on the GPU machine
custom_hooks = [dict(type='EMAHook', ema_type='mmdet.ExpMomentumEMA', momentum=0.0002, priority=49)]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=250,
                                     max_keep_ckpts=2))
