"""TrackOcc detector at a tiny size on CPU: clip loss, streaming predict with persistent ids,
reset at sequence start, config consistency, NaN reporting, clips without things."""
import copy
import math

import pytest
import torch
from mmdet.structures import TrackDataSample
from mmengine.structures import BaseDataElement

from trackocc.registry import MODELS
from mmdet3d.structures import Det3DDataSample

E = 32
N_CAMS = 2
IMG = (32, 64)
GRID = dict(x=(-8.0, 8.0, 0.8), y=(-8.0, 8.0, 0.8), z=(-1.0, 5.4, 1.6), depth=(1.0, 9.0, 1.0))
PC_RANGE = [-8.0, -8.0, -1.0, 8.0, 8.0, 5.4]
OCC = (20, 20, 4)
COMPACT = (5, 5, 4)
NUM_QUERIES = 6


def tiny_cfg():
    return dict(
        type='TrackOcc',
        num_thing_queries=NUM_QUERIES, embed_dims=E, num_classes=16, thing_classes=[1, 2, 4],
        grid_config=GRID, time_interval=0.5, with_velo=True,
        img_backbone=dict(type='mmdet.ResNet', depth=18, base_channels=8, num_stages=4,
                          out_indices=(0, 1, 2, 3), norm_eval=False, frozen_stages=-1),
        img_neck=dict(type='mmdet.FPN', in_channels=[8, 16, 32, 64], out_channels=E,
                      num_outs=4),
        img_view_transformer=dict(type='LSSViewTransformerBEVDepth', grid_config=GRID,
                                  input_size=IMG, downsample=16, in_channels=E, out_channels=4,
                                  depthnet_cfg=dict(use_dcn=False, aspp_mid_channels=8)),
        volume_encoder_backbone=dict(type='CustomResNet3D', numC_input=4, num_layer=[1, 1, 1],
                                     num_channels=[4, 8, 16], stride=[1, 2, 2],
                                     backbone_output_ids=[0, 1, 2]),
        volume_encoder_neck=dict(type='LSSFPN3D', in_channels=28, out_channels=4, reverse=True,
                                 size=COMPACT),
        occ_encoder=dict(type='OccupancyEncoder', in_channels=4, embed_dims=E,
                         num_cams=N_CAMS, num_feature_levels=4, num_layers=1,
                         pc_range=PC_RANGE,
                         positional_encoding=dict(num_feats=[12, 12, 8], row_num_embed=5,
                                                  col_num_embed=5, tub_num_embed=4),
                         layer_cfg=dict(self_attn_cfg=dict(num_heads=4, num_levels=1,
                                                           num_points=2),
                                        cross_attn_cfg=dict(num_heads=4, num_points=2),
                                        ffn_cfg=dict(feedforward_channels=64))),
        pts_bbox_head=dict(type='TrackOccHead', num_classes=16, thing_classes=[1, 2, 4],
                           embed_dims=E, num_stuff_queries=4, occ_size=OCC, pc_range=PC_RANGE,
                           decoder=dict(type='MaskDecoder', num_layers=1, num_heads=4,
                                        num_points=2),
                           with_velo=True, sem_hidden_channels=16,
                           loss_sem=dict(type='mmdet.CrossEntropyLoss',
                                         class_weight=[1.0] * 16, loss_weight=2.0)),
        query_interaction=dict(type='QueryInteractionModule', embed_dims=E, num_heads=4),
        memory_bank=dict(type='MemoryBank', embed_dims=E, memory_len=4, num_heads=4),
    )


def build(cfg=None):
    torch.manual_seed(0)
    model = MODELS.build(cfg or tiny_cfg())
    model.init_weights()
    return model


def build_without_dropout(cfg=None, state=None):
    """``build(cfg)`` in training mode with ``state`` loaded and every dropout off, so two
    such models draw no different dropout masks and compare pass for pass."""
    model = build(cfg)
    if state is not None:
        model.load_state_dict(state)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.train()


def camera(yaw_deg):
    """Camera at 1.5 m height looking along the ego direction ``yaw_deg``."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    fwd, left = torch.tensor([c, s, 0.0]), torch.tensor([-s, c, 0.0])
    rot = torch.stack([-left, torch.tensor([0.0, 0.0, -1.0]), fwd])  # ego -> cam (x r, y d)
    lidar2cam = torch.eye(4)
    lidar2cam[:3, :3] = rot
    lidar2cam[:3, 3] = -rot @ torch.tensor([0.0, 0.0, 1.5])
    cam2img = torch.eye(4)
    cam2img[:3, :3] = torch.tensor([[20.0, 0.0, 32.0], [0.0, 20.0, 16.0], [0.0, 0.0, 1.0]])
    return cam2img, lidar2cam


def make_frame(t, seq=0, start=False, things=True, ego_x=None):
    gen = torch.Generator().manual_seed(100 * seq + t)
    cams = [camera(0.0), camera(90.0)]
    cam2img = torch.stack([c[0] for c in cams])
    lidar2cam = torch.stack([c[1] for c in cams])
    aug = torch.eye(4).expand(N_CAMS, 4, 4).clone()
    ego = torch.eye(4, dtype=torch.float64)
    ego[0, 3] = 0.4 * t if ego_x is None else ego_x
    meta = dict(sample_idx=seq * 1000 + t, sequence_id=seq, frame_idx=t, timestamp=0.5 * t,
                start_of_sequence=start, ego2global=ego.numpy(), cam2img=cam2img.numpy(),
                lidar2cam=lidar2cam.numpy(), img_aug_matrix=aug.numpy(),
                lidar2img=(aug @ cam2img @ lidar2cam).numpy(), img_shape=IMG, num_views=N_CAMS)
    sem = torch.full(OCC, 15, dtype=torch.long)
    sem[:, :, 0] = 13
    sem[0:3, :, 1:3] = 10
    inst = torch.zeros(OCC, dtype=torch.long)
    ids, labels = [], []
    if things:
        x0 = 8 + t  # a vehicle moving +1 voxel per frame, and a pedestrian standing still
        sem[x0:x0 + 3, 9:11, 1] = 1
        inst[x0:x0 + 3, 9:11, 1] = 11
        sem[5, 15, 1:3] = 2
        inst[5, 15, 1:3] = 12
        ids, labels = [11, 12], [1, 2]
    visible = torch.rand(OCC, generator=gen) > 0.2
    gt_occ = BaseDataElement(semantics=sem, instances=inst, mask_camera=visible,
                             mask_lidar=visible, infov=torch.ones(OCC, dtype=torch.bool),
                             instance_ids=torch.tensor(ids, dtype=torch.long),
                             instance_labels=torch.tensor(labels, dtype=torch.long))
    frame = Det3DDataSample(metainfo=meta)
    frame.gt_occ = gt_occ
    depth = torch.rand(N_CAMS, *IMG, generator=gen) * 8 + 1
    frame.gt_depth = depth * (torch.rand(N_CAMS, *IMG, generator=gen) > 0.7)
    return frame


def make_clip(frames):
    sample = TrackDataSample()
    sample.video_data_samples = frames
    return sample


def images(B, T, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, N_CAMS, 3, *IMG, generator=gen)


def test_loss_on_tiny_clip_is_finite_and_trains_all_parts():
    model = build().train()
    clips = [make_clip([make_frame(t, seq=b) for t in range(3)]) for b in range(2)]
    losses = model.loss(dict(imgs=images(2, 3)), clips)
    for t in range(3):
        for key in ('loss_cls_d0', 'loss_mask_d0', 'loss_dice_d0', 'loss_center_d0',
                    'loss_depth', 'loss_sem', 'loss_stuff_cls_d0', 'loss_stuff_mask_d0',
                    'loss_stuff_dice_d0'):
            assert f'frame{t}_{key}' in losses, f'frame{t}_{key}'
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for name in ('query_embedding.weight', 'reference_points.weight',
                 'img_backbone.conv1.weight', 'img_view_transformer.depth_net.depth_conv.weight'
                 if 'img_view_transformer.depth_net.depth_conv.weight' in params else
                 'img_neck.lateral_convs.0.conv.weight',
                 'pts_bbox_head.cls_embed.weight', 'pts_bbox_head.velo_branches.0.weight',
                 'query_interaction.ffn_feat.layers.1.weight'):
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name


def test_clip_without_things_trains():
    model = build().train()
    clip = make_clip([make_frame(t, things=False) for t in range(2)])
    losses = model.loss(dict(imgs=images(1, 2)), [clip])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['frame0_loss_mask_d0'] == 0
    sum(losses.values()).backward()


def test_nan_loss_names_the_term():
    model = build().train()
    with torch.no_grad():
        model.pts_bbox_head.cls_embed.bias[3] = float('nan')
    clip = make_clip([make_frame(t) for t in range(2)])
    with pytest.raises(FloatingPointError, match='frame0_loss_cls_d0'):
        model.loss(dict(imgs=images(1, 2)), [clip])


def test_predict_streams_with_persistent_ids_and_resets():
    model = build().eval()
    with torch.no_grad():  # every query confidently predicts "vehicle"
        model.pts_bbox_head.cls_embed.bias.fill_(-8.0)
        model.pts_bbox_head.cls_embed.bias[1] = 8.0
    ids_per_frame = []
    for t in range(3):
        sample = make_clip([make_frame(t, start=(t == 0))])
        with torch.no_grad():
            out = model.predict(dict(imgs=images(1, 1, seed=t)), [sample])
        pred = out[0].video_data_samples[0].pred_occ
        assert pred.semantics.shape == OCC and pred.semantics.dtype == torch.uint8
        assert pred.instances.shape == OCC and pred.instances.dtype == torch.int32
        tracks = model._test_state.next_queries()
        ids = set(tracks.obj_idxes[tracks.obj_idxes >= 0].tolist())
        assert set(pred.instances.unique().tolist()) <= {0} | {i + 1 for i in ids}
        ids_per_frame.append(ids)
    # frame 0 births ids 0..5; they persist while fresh queries are born with new ids
    assert ids_per_frame[0] == set(range(NUM_QUERIES))
    assert ids_per_frame[0] < ids_per_frame[1] < ids_per_frame[2]
    assert len(model._test_state.next_queries()) == NUM_QUERIES + 3 * NUM_QUERIES
    # a new sequence starts from fresh queries and id 0
    sample = make_clip([make_frame(0, seq=1, start=True)])
    with torch.no_grad():
        model.predict(dict(imgs=images(1, 1)), [sample])
    tracks = model._test_state.next_queries()
    assert set(tracks.obj_idxes[tracks.obj_idxes >= 0].tolist()) == set(range(NUM_QUERIES))


def stream_births(birth_needs_output):
    """A 3-frame stream where every query confidently predicts "vehicle" and the merge (stubbed)
    shows only the even ids among those given in the frame (ids from ``NUM_QUERIES * t`` on in
    frame t: fresh queries take the next ids), none of the carried tracks: per frame, the ids
    born, shown and carried on."""
    cfg = tiny_cfg()
    cfg['tracker'] = dict(type='RuntimeTracker', birth_needs_output=birth_needs_output)
    model = build(cfg).eval()
    with torch.no_grad():
        model.pts_bbox_head.cls_embed.bias.fill_(-8.0)
        model.pts_bbox_head.cls_embed.bias[1] = 8.0
    n = math.prod(OCC)

    def even_ids_shown(tracks, out):
        idx = tracks.obj_idxes
        ids = idx[(idx >= NUM_QUERIES * len(frames)) & (idx % 2 == 0)] + 1
        instances = torch.zeros(n, dtype=torch.int32)
        instances[:len(ids)] = ids.to(torch.int32)
        return torch.full((n, ), 15, dtype=torch.int32), instances

    model._merge = even_ids_shown
    carried, frames = set(), []
    for t in range(3):
        with torch.no_grad():
            out = model.predict(dict(imgs=images(1, 1, seed=t)),
                                [make_clip([make_frame(t, start=(t == 0))])])
        shown = {i - 1 for i in out[0].video_data_samples[0].pred_occ.instances.unique().tolist()
                 if i > 0}
        tracks = model._test_state.next_queries()
        live = set(tracks.obj_idxes[tracks.obj_idxes >= 0].tolist())
        frames.append((live - carried, shown, live))
        carried = live
    return frames


def test_birth_needs_output_carries_only_the_births_the_merge_shows():
    """The original rule carries every confident new query; with ``birth_needs_output`` a
    query born in a frame is carried only if that frame's merge shows it, and tracks carried
    from earlier frames are kept whether shown or not."""
    original = stream_births(False)
    assert [len(born) for born, *_ in original] == [NUM_QUERIES] * 3
    frames = stream_births(True)
    carried = set()
    for born, shown, live in frames:
        assert born and born <= shown and carried <= live and not carried & shown
        carried = live
    assert [len(born) for born, *_ in frames] == [NUM_QUERIES // 2] * 3


def test_predict_rejects_batches():
    model = build().eval()
    clips = [make_clip([make_frame(0, start=True)]) for _ in range(2)]
    with pytest.raises(ValueError, match='one frame of one sequence'):
        model.predict(dict(imgs=images(2, 1)), clips)


def test_head_takes_the_detectors_thing_classes_and_tracker_from_config():
    cfg = tiny_cfg()
    cfg['pts_bbox_head'].pop('thing_classes')
    cfg.update(thing_classes=[1, 2],
               tracker=dict(type='RuntimeTracker', score_thresh=0.4, filter_score_thresh=0.2,
                            miss_tolerance=2))
    model = MODELS.build(cfg)
    assert model.pts_bbox_head.thing_classes == [1, 2]
    assert (model.tracker.score_thresh, model.tracker.filter_score_thresh,
            model.tracker.miss_tolerance) == (0.4, 0.2, 2)
    cfg['pts_bbox_head']['thing_classes'] = [1, 2, 4]  # stated twice and different
    with pytest.raises(ValueError, match='pts_bbox_head.thing_classes'):
        MODELS.build(cfg)


def test_inconsistent_configs_are_rejected():
    cfg = tiny_cfg()
    cfg['pts_bbox_head']['occ_size'] = (10, 10, 4)
    with pytest.raises(ValueError, match='pts_bbox_head.occ_size'):
        MODELS.build(cfg)
    cfg = tiny_cfg()
    cfg['pts_bbox_head']['num_classes'] = 17
    cfg['pts_bbox_head']['loss_sem']['class_weight'] = [1.0] * 17
    with pytest.raises(ValueError, match='num_classes'):
        MODELS.build(cfg)
    cfg = tiny_cfg()
    cfg['grid_config'] = dict(GRID, x=(-8.0, 8.0, 0.7))
    with pytest.raises(ValueError, match='whole voxels'):
        MODELS.build(cfg)
    cfg = copy.deepcopy(tiny_cfg())
    cfg['query_interaction']['embed_dims'] = 16
    with pytest.raises(ValueError, match='query_interaction.embed_dims'):
        MODELS.build(cfg)


def test_gt_grid_mismatch_is_reported():
    model = build().train()
    frame = make_frame(0)
    frame.gt_occ.semantics = frame.gt_occ.semantics[:10]
    with pytest.raises(ValueError, match='gt_occ of frame 0'):
        model.loss(dict(imgs=images(1, 1)), [make_clip([frame])])


def test_refiner_refines_mask_features_and_trains():
    cfg = tiny_cfg()
    cfg['refiner'] = dict(type='DenseVoxelRefiner', in_channels=E, mid_channels=8, num_blocks=1)
    model = build(cfg).train()
    losses = model.loss(dict(imgs=images(1, 2)), [make_clip([make_frame(t) for t in range(2)])])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.refiner.out_proj.weight.grad.abs().sum() > 0
    cfg['pts_bbox_head'].update(sem_hidden_channels=0, loss_sem=None)
    with pytest.raises(ValueError, match='refiner needs the semantic branch'):
        MODELS.build(cfg)


def test_mixed_precision_loss_and_stream():
    """Under autocast (bf16 on CPU, fp16 on GPU) losses stay float32 and track state mixes
    half and float tensors without dtype errors."""
    model = build().train()
    clip = make_clip([make_frame(t) for t in range(2)])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(dict(imgs=images(1, 2)), [clip])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    model.eval()
    for t in range(2):
        sample = make_clip([make_frame(t, start=(t == 0))])
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            model.predict(dict(imgs=images(1, 1, seed=t)), [sample])
    assert model._test_state.next_queries().ref_pts.dtype == torch.float32
