# The embedded synthetic data set (tools/create_data.py synthetic, same layout as the release):
# every frame kept (the generator writes frames 0.5 s apart), small images, same pipeline.
_base_ = ['./waymo-trackocc.py']

data_root = 'data/synthetic-waymo/'
load_interval = 1
data_config = dict(
    cams={{_base_.cams}},
    input_size=(128, 352),  # (H, W), half of the paper's 256x704
    src_size=(320, 480),  # generator default image size (W 480, H 320); informational
    resize=(-0.06, 0.11),
    rot=(-5.4, 5.4),
    flip=True,
    crop_h=(0.0, 0.0),
    resize_test=0.0,
)
train_frame_pipeline = [
    dict(type='LoadMultiViewImages', cams={{_base_.cams}}),
    dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=True,
         draw={{_base_.img_aug_draw}}, resample={{_base_.img_resample}}),
    dict(type='LoadLiDARPoints', coord_type='LIDAR', load_dim=6, use_dim=3),
    dict(type='PointsToMultiViewDepth', depth_range={{_base_.depth_range}}),
    dict(type='LoadPanopticOccupancy', thing_classes={{_base_.thing_classes}},
         table_mask='mask_camera'),
]
test_frame_pipeline = [
    dict(type='LoadMultiViewImages', cams={{_base_.cams}}),
    dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=False,
         resample={{_base_.img_resample}}),
    dict(type='LoadPanopticOccupancy', thing_classes={{_base_.thing_classes}},
         table_mask='mask_camera'),
]
train_pipeline = [
    dict(type='TransformBroadcaster', share_random_params=True,
         transforms=train_frame_pipeline),
    dict(type='PackTrackOccInputs', keys=('img', 'gt_occ', 'gt_depth')),
]
test_pipeline = [
    dict(type='TransformBroadcaster', share_random_params=True,
         transforms=test_frame_pipeline),
    dict(type='PackTrackOccInputs', keys=('img', 'gt_occ')),
]
train_dataloader = dict(
    num_workers=2,
    dataset=dict(data_root=data_root, load_interval=load_interval, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=2,
    dataset=dict(data_root=data_root, load_interval=load_interval, pipeline=test_pipeline))
test_dataloader = val_dataloader
