# TrackOcc-Waymo (released layout, docs/data_contract.md) with the paper's data settings:
# 5 cameras resized from 1920x1280 to 704x256 with LSS augmentation, every 5th frame (0.5 s),
# training on clips of 3 consecutive kept frames, testing streams every kept frame in order.
dataset_type = 'WaymoTrackOccDataset'
data_root = 'data/TrackOcc-waymo/'

occ_class_names = [
    'GO', 'vehicle', 'pedestrian', 'sign', 'cyclist', 'trafficlight', 'pole',
    'constructioncone', 'bicycle', 'motorcycle', 'building', 'vegetation', 'treetrunk',
    'road', 'walkable', 'free'
]
thing_classes = [1, 2, 4]  # vehicle, pedestrian, cyclist (signs keep no instance id)
metainfo = dict(classes=occ_class_names, thing_classes=thing_classes)

cams = ['CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_SIDE_LEFT', 'CAM_SIDE_RIGHT']
data_config = dict(
    cams=cams,
    input_size=(256, 704),  # (H, W) network input
    resize=(-0.06, 0.11),  # added to the per-axis scale input/source when training
    rot=(-5.4, 5.4),  # degrees
    flip=True,
    crop_h=(0.0, 0.0),  # crop from the bottom rows
    resize_test=0.0,
)
depth_range = (2.0, 42.0)  # metres kept in the depth maps (the depth-net bins)
load_interval = 5
num_frames_per_sample = 3
backend_args = None

# The one definition of the pipelines. TransformBroadcaster runs the per-frame steps on every
# frame of a clip. A variant replaces a step by name and lists the steps again (mmengine merges
# dicts, not lists): the tiny config (input size), ..._improved.py (image resampling, depth
# pixels). The image augmentation is the original's (docs/deviations.md, "Image augmentation"):
# every camera of every frame draws its own parameters, and the pixels go through Pillow's
# bicubic resize, crop, flip and nearest rotation of the full-resolution image
# (decode_reduce=1).
decode_reduce = 1
img_aug_draw = 'per_camera_per_frame'
img_resample = 'pil_bicubic'
load_images = dict(type='LoadMultiViewImages', cams=cams, decode_reduce=decode_reduce,
                   backend_args=backend_args)
train_img_aug = dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=True,
                     draw=img_aug_draw, resample=img_resample)
test_img_aug = dict(type='MultiViewImageAugmentation', data_config=data_config, is_train=False,
                    resample=img_resample)
load_points = dict(type='LoadLiDARPoints', coord_type='LIDAR', load_dim=6, use_dim=3,
                   backend_args=backend_args)
points_to_depth = dict(type='PointsToMultiViewDepth', depth_range=depth_range)
load_occ = dict(type='LoadPanopticOccupancy', thing_classes=thing_classes,
                table_mask='mask_camera', backend_args=backend_args)
pack_train = dict(type='PackTrackOccInputs', keys=('img', 'gt_occ', 'gt_depth'))
pack_test = dict(type='PackTrackOccInputs', keys=('img', 'gt_occ'))
train_pipeline = [
    dict(type='TransformBroadcaster', share_random_params=True,
         transforms=[load_images, train_img_aug, load_points, points_to_depth, load_occ]),
    pack_train,
]
test_pipeline = [
    dict(type='TransformBroadcaster', share_random_params=True,
         transforms=[load_images, test_img_aug, load_occ]),
    pack_test,
]

data_prefix_train = dict(
    pts='kitti_format/training/velodyne',
    occ='pano_voxel04/training',
    **{cam: f'kitti_format/training/image_{i}' for i, cam in enumerate(cams)})
# validation frames' images and LiDAR also live under training/ in the release
data_prefix_val = dict(data_prefix_train, occ='pano_voxel04/validation')

# pin_memory: the images and, in training, the ground truth (ClipDataSample.pin_memory) reach
# the GPU from pinned memory (TrackOccDataPreprocessor copies them asynchronously; pinned by
# the DataLoader's thread, not the main process; the fast path's CUDA graphs capture in
# thread-local mode, so that thread may run during a capture)
train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='ClipSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='kitti_format/waymo_infos_train_jpg.pkl',
        data_prefix=data_prefix_train,
        pipeline=train_pipeline,
        metainfo=metainfo,
        thing_classes=thing_classes,
        modality=dict(use_camera=True, use_lidar=True),
        load_interval=load_interval,
        num_frames_per_sample=num_frames_per_sample,
        filter_empty_gt=True,  # as the reference: redraw clips with a thing-less frame
        test_mode=False,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,  # streaming: one frame after the other
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='SequenceStreamSampler'),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='kitti_format/waymo_infos_val_jpg.pkl',
        data_prefix=data_prefix_val,
        pipeline=test_pipeline,
        metainfo=metainfo,
        thing_classes=thing_classes,
        modality=dict(use_camera=True, use_lidar=False),
        load_interval=load_interval,
        test_mode=True,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(type='OccSTQMetric')
test_evaluator = val_evaluator
