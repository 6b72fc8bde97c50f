"""The paper config trains with what the original ran (constant learning rate, seed 0, BGR input,
nuImages backbone under ``backbone.``, the original's switches); the ``_improved`` config
differs from it only where docs/deviations.md says so."""
import copy

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from trackocc.registry import MODELS

PAPER = 'configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py'
IMPROVED = 'configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ_improved.py'


@pytest.fixture(scope='module')
def paper():
    return Config.fromfile(PAPER)


@pytest.fixture(scope='module')
def improved():
    return Config.fromfile(IMPROVED)


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.img_backbone = torch.nn.Linear(2, 2)
        self.sampling_offsets = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 2)


def test_paper_learning_rate_is_constant(paper):
    assert paper.param_scheduler == []
    assert paper.optim_wrapper.type == 'HostSyncFreeAmpOptimWrapper'  # CUDA only: fp32 here
    cfg = copy.deepcopy(paper.optim_wrapper)
    cfg.type = 'OptimWrapper'
    cfg.pop('loss_scale')
    with DefaultScope.overwrite_default_scope('trackocc'):
        wrapper = build_optim_wrapper(Toy(), cfg)
    lrs = sorted(g['lr'] for g in wrapper.optimizer.param_groups for _ in g['params'])
    assert lrs == pytest.approx([2e-5] * 4 + [2e-4] * 2)  # x0.1: backbone and sampling offsets
    assert len(wrapper.optimizer.param_groups) == 2  # one group per setting
    assert paper.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert paper.val_cfg.fp16 and paper.test_cfg.fp16  # the original tested in fp16
    assert paper.randomness == dict(seed=0)  # the original's train.py / test.py default


def test_improved_schedule_is_the_cosine_the_original_asked_for(paper, improved):
    warmup, cosine = improved.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', pytest.approx(1 / 3),
                                                              500)
    assert cosine.type == 'CosineAnnealingLR'
    assert cosine.T_max == cosine.end == paper.train_cfg.max_iters
    assert cosine.eta_min == pytest.approx(paper.optim_wrapper.optimizer.lr * 1e-3)


def test_paper_model_switches_are_the_originals(paper, improved):
    model = paper.model
    assert (model.train_visibility, model.velocity_source, model.autocast_scope,
            model.track_alignment) == ('camera_and_infov', 'any_voxel', 'reference', 'reference')
    assert model.track_score_classes == [1, 2, 3, 4]
    assert model.img_view_transformer.legacy_voxel_index
    assert not model.img_view_transformer.frustum_at_cell_centres
    assert model.occ_encoder.layer_cfg.self_attn_cfg.legacy_axis_order
    assert model.pts_bbox_head.decoder.legacy_axis_order
    assert model.pts_bbox_head.decoder.self_attn_residual == 'cross_attn_out'
    assert model.data_preprocessor.rgb_to_bgr
    # the improved config fixes exactly these, nothing else of the model differs
    fixes = dict(rgb_to_bgr=False, track_alignment='all_live', track_score_classes=None,
                 legacy_voxel_index=False, encoder_axis=False, decoder_axis=False)
    got = dict(rgb_to_bgr=improved.model.data_preprocessor.rgb_to_bgr,
               track_alignment=improved.model.track_alignment,
               track_score_classes=improved.model.track_score_classes,
               legacy_voxel_index=improved.model.img_view_transformer.legacy_voxel_index,
               encoder_axis=improved.model.occ_encoder.layer_cfg.self_attn_cfg.legacy_axis_order,
               decoder_axis=improved.model.pts_bbox_head.decoder.legacy_axis_order)
    assert got == fixes
    a, b = copy.deepcopy(model.to_dict()), copy.deepcopy(improved.model.to_dict())
    for cfg in (a, b):
        cfg['data_preprocessor'].pop('rgb_to_bgr')
        for key in ('track_alignment', 'track_score_classes'):
            cfg.pop(key)
        cfg['img_view_transformer'].pop('legacy_voxel_index')
        cfg['occ_encoder']['layer_cfg']['self_attn_cfg'].pop('legacy_axis_order')
        cfg['pts_bbox_head']['decoder'].pop('legacy_axis_order')
    assert a == b


def test_original_weights_config_is_the_paper_model_without_pretraining(paper):
    converted = Config.fromfile(PAPER.replace('.py', '_original-weights.py'))
    assert converted.model.img_backbone.init_cfg is None
    a, b = copy.deepcopy(paper.model.to_dict()), copy.deepcopy(converted.model.to_dict())
    a['img_backbone'].pop('init_cfg')
    b['img_backbone'].pop('init_cfg')
    assert a == b


def _image_steps(pipeline):
    frame = pipeline[0].transforms
    load = [t for t in frame if t.type == 'LoadMultiViewImages']
    aug = [t for t in frame if t.type == 'MultiViewImageAugmentation']
    assert len(load) == len(aug) == 1
    return load[0], aug[0]


def test_paper_image_augmentation_is_the_originals(paper):
    """Draws per camera and frame, Pillow's resampling of the full-resolution image."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        load, aug = _image_steps(paper[loader].dataset.pipeline)
        assert load.get('decode_reduce', 1) == 1, loader
        assert aug.get('resample', 'pil_bicubic') == 'pil_bicubic', loader
        assert aug.get('draw', 'per_camera_per_frame') == 'per_camera_per_frame', loader
        assert aug.is_train == (loader == 'train_dataloader')


def _drop_image_resampling(pipeline, expect):
    load, aug = _image_steps(pipeline)
    assert (load.pop('decode_reduce', 1), aug.pop('resample', 'pil_bicubic')) == expect
    aug.pop('interpolation', None)
    assert aug.get('draw', 'per_camera_per_frame') == 'per_camera_per_frame'
    aug.pop('draw', None)


def test_improved_pipelines_differ_only_in_resampling_and_depth_pixel_index(paper, improved):
    a = copy.deepcopy(paper.train_dataloader.dataset.pipeline)
    b = copy.deepcopy(improved.train_dataloader.dataset.pipeline)
    depth_a = [t for t in a[0].transforms if t.type == 'PointsToMultiViewDepth']
    depth_b = [t for t in b[0].transforms if t.type == 'PointsToMultiViewDepth']
    assert len(depth_a) == len(depth_b) == 1
    assert depth_a[0].get('pixel_index', 'round') == 'round'  # the transform's default
    assert depth_b[0].pop('pixel_index') == 'floor'
    depth_a[0].pop('pixel_index', None)
    pairs = [(a, b)] + [(copy.deepcopy(paper[k].dataset.pipeline),
                         copy.deepcopy(improved[k].dataset.pipeline))
                        for k in ('val_dataloader', 'test_dataloader')]
    for pa, pb in pairs:
        _drop_image_resampling(pa, (1, 'pil_bicubic'))
        _drop_image_resampling(pb, (2, 'warp'))
        assert pa == pb, 'update the _improved config to the paper config pipelines'


def test_paper_input_is_what_the_original_fed(paper, improved):
    """mmcv ``imnormalize(np.array(pil_rgb), mean, std, to_rgb=True)``: BGR channels
    normalized with the RGB mean / std."""
    rgb = torch.zeros(1, 1, 1, 3, 2, 2, dtype=torch.uint8)
    rgb[..., 0, :, :], rgb[..., 1, :, :], rgb[..., 2, :, :] = 10, 120, 250
    mean = np.array([123.675, 116.28, 103.53])
    std = np.array([58.395, 57.12, 57.375])
    bgr_values = np.array([250.0, 120.0, 10.0])
    want = {PAPER: (bgr_values - mean) / std, IMPROVED: (bgr_values[::-1] - mean) / std}
    for name, cfg in ((PAPER, paper), (IMPROVED, improved)):
        pre = MODELS.build(cfg.model.data_preprocessor)
        out = pre(dict(inputs=dict(img=[rgb[0]]), data_samples=None))['inputs']['imgs']
        got = out[0, 0, 0, :, 0, 0].double().numpy()
        assert np.allclose(got, want[name], atol=1e-5), name


def test_nuimages_backbone_loads_with_the_backbone_prefix(paper, tmp_path):
    """The nuImages Cascade Mask R-CNN keeps its ResNet under ``backbone.``: the paper
    config's init_cfg loads exactly those weights (a ResNet-18 stands in for speed)."""
    init_cfg = paper.model.img_backbone.init_cfg
    assert init_cfg.type == 'Pretrained' and init_cfg.prefix == 'backbone.'
    assert init_cfg.checkpoint.endswith(
        'cascade_mask_rcnn_r50_fpn_coco-20e_20e_nuim_20201009_124951-40963960.pth')
    cfg = copy.deepcopy(paper.model.img_backbone.to_dict())
    cfg.update(depth=18, init_cfg=dict(init_cfg.to_dict(), checkpoint=str(tmp_path / 'n.pth')))
    torch.manual_seed(0)
    source = MODELS.build(dict(cfg, init_cfg=None)).state_dict()
    detector_ckpt = {f'backbone.{k}': v.clone().fill_(0.5) if v.is_floating_point() else v
                     for k, v in source.items()}
    detector_ckpt.update({'neck.lateral_convs.0.conv.weight': torch.ones(1),
                          'roi_head.bbox_head.0.fc_cls.weight': torch.ones(1)})
    torch.save(dict(state_dict=detector_ckpt), tmp_path / 'n.pth')
    backbone = MODELS.build(cfg)
    backbone.init_weights()
    loaded = backbone.state_dict()
    assert loaded.keys() == source.keys()
    assert all(torch.all(v == 0.5) for v in loaded.values() if v.is_floating_point())
