# The TrackOcc paper model (ResNet-50, 704x256, 200 thing + 50 stuff queries) on the 200x200x16
# grid.
# ---- settings of the original config (configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py)
num_thing_queries = 200
num_stuff_queries = 50
score_threshold = 0.3
filter_score_threshold = 0.25
overlap_threshold = 0.7
miss_tolerance = 3
embed_dims = 256
num_cams = 5
numC_Trans = 32  # view-transformer channels
input_size = (256, 704)
pos_dims = [96, 96, 64]
point_cloud_range = [-40., -40., -1.0, 40., 40., 5.4]
grid_config = dict(x=(-40., 40., 0.4), y=(-40., 40., 0.4), z=(-1., 5.4, 0.4),
                   depth=(2.0, 42.0, 0.5))
occ_size = (200, 200, 16)
compact_size = (50, 50, 16)
num_classes = 16  # 15 semantic classes + free; things: vehicle 1, pedestrian 2, cyclist 4
class_weight_multiclass = [
    21.996729830048952, 7.504469780801267, 10.597629961083673, 12.18107968968811,
    15.143940258446506, 13.035521328502758, 9.861234292376812, 13.64431851057796,
    15.121236434460473, 21.996729830048952, 6.201671013759701, 5.7420517938838325,
    9.768712859518626, 3.4607400626606317, 4.152268220983671, 1.000000000000000,
]

# The nuImages Cascade Mask R-CNN (mmdet3d model zoo) the original's image backbone starts from;
# its ResNet-50 weights are stored under `backbone.` (the original loaded them with
# load_from + revise_keys backbone -> img_backbone), here with init_cfg prefix='backbone.'.
nuimages_r50 = ('https://download.openmmlab.com/mmdetection3d/v0.1.0_models/nuimages_semseg/'
                'cascade_mask_rcnn_r50_fpn_coco-20e_20e_nuim/'
                'cascade_mask_rcnn_r50_fpn_coco-20e_20e_nuim_20201009_124951-40963960.pth')

model = dict(
    type='TrackOcc',
    num_thing_queries=num_thing_queries,
    embed_dims=embed_dims,
    num_classes=num_classes,  # thing_classes: set with the data set's (leaf configs)
    grid_config=grid_config,
    time_interval=0.5,
    with_velo=True,
    score_threshold=score_threshold,
    overlap_threshold=overlap_threshold,
    tracker=dict(type='RuntimeTracker', score_thresh=score_threshold,
                 filter_score_thresh=filter_score_threshold, miss_tolerance=miss_tolerance),
    # What the original did (docs/deviations.md; the ..._improved.py config changes them):
    train_visibility='camera_and_infov',  # losses, matching, stuff targets on mask_camera & infov
    velocity_source='any_voxel',  # velocity targets from any voxel of the instance at t+1
    autocast_scope='reference',  # AMP only in image/volume encoders and occupancy encoder + head
    track_alignment='reference',  # inference: track id 0 not ego-aligned, aligned ones moved last
    track_score_classes=[1, 2, 3, 4],  # track scores over the detector's inst_class_ids (sign too)
    # The images are loaded as RGB; the original normalized them with mmcv's to_rgb=True, which
    # swapped a PIL RGB image to BGR and normalized that with the RGB mean / std:
    # rgb_to_bgr=True feeds the same tensor.
    data_preprocessor=dict(type='TrackOccDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], rgb_to_bgr=True),
    img_backbone=dict(
        type='mmdet.ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=nuimages_r50, prefix='backbone.')),
    img_neck=dict(type='mmdet.FPN', in_channels=[256, 512, 1024, 2048], out_channels=embed_dims,
                  num_outs=4, upsample_cfg=dict(mode='nearest')),
    img_view_transformer=dict(
        type='LSSViewTransformerBEVDepth', grid_config=grid_config, input_size=input_size,
        downsample=16, in_channels=embed_dims, out_channels=numC_Trans, loss_depth_weight=1.0,
        depthnet_cfg=dict(use_dcn=False, aspp_mid_channels=96),
        # metres -> voxel index by truncation toward zero (pools points up to one voxel below the
        # grid into the first voxel); frustum columns at linspace(0, W - 1, w)
        legacy_voxel_index=True, frustum_at_cell_centres=False),
    volume_encoder_backbone=dict(
        type='CustomResNet3D', numC_input=numC_Trans, num_layer=[1, 2, 4],
        num_channels=[numC_Trans, numC_Trans * 2, numC_Trans * 4], stride=[1, 2, 2],
        backbone_output_ids=[0, 1, 2], norm_cfg=dict(type='BN3d', requires_grad=True)),
    volume_encoder_neck=dict(type='LSSFPN3D', in_channels=numC_Trans * 7, out_channels=numC_Trans,
                             reverse=True, size=compact_size),
    occ_encoder=dict(
        type='OccupancyEncoder', in_channels=numC_Trans, embed_dims=embed_dims, num_cams=num_cams,
        num_feature_levels=4, num_layers=1, pc_range=point_cloud_range,
        positional_encoding=dict(num_feats=pos_dims, row_num_embed=compact_size[0],
                                 col_num_embed=compact_size[1], tub_num_embed=compact_size[2]),
        # legacy_axis_order: the original's 3D deformable attention sampled with x and z swapped
        layer_cfg=dict(self_attn_cfg=dict(num_heads=8, num_levels=1, num_points=4,
                                          legacy_axis_order=True),
                       cross_attn_cfg=dict(num_heads=8, num_points=8),
                       ffn_cfg=dict(feedforward_channels=embed_dims * 2, ffn_drop=0.1))),
    pts_bbox_head=dict(
        type='TrackOccHead', num_classes=num_classes,  # thing_classes: the detector's
        embed_dims=embed_dims, num_stuff_queries=num_stuff_queries, occ_size=occ_size,
        pc_range=point_cloud_range, with_velo=True,
        decoder=dict(type='MaskDecoder', num_layers=1, num_heads=8, num_points=4,
                     legacy_axis_order=True, self_attn_residual='cross_attn_out'),
        loss_sem=dict(type='mmdet.CrossEntropyLoss', class_weight=class_weight_multiclass,
                      loss_weight=2.0)),
    query_interaction=dict(type='QueryInteractionModule', embed_dims=embed_dims, num_heads=8,
                           random_drop=0.1, fp_ratio=0.3, update_query_pos=True),
    memory_bank=dict(type='MemoryBank', embed_dims=embed_dims, memory_len=4, num_heads=8,
                     save_score_thresh=0.0),
)

# Track queries are dropped / inserted at random and the memory bank only acts on carried tracks,
# so some parameters get no gradient in some iterations: let DDP tolerate it.
find_unused_parameters = True
