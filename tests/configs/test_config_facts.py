"""The configs' copies of the data contract's facts equal their home, trackocc.structures.

MMEngine's plain-Python configs cannot import trackocc (an import of a non-builtin module
turns a config into a lazy-import config, which cannot inherit from plain ones), so the class
table, cameras and grid are written once in the base configs and checked here."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from trackocc import structures as occ

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'trackocc', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_tables_equal_the_data_contract(path):
    cfg = Config.fromfile(path)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        meta = cfg[loader].dataset.metainfo
        assert tuple(meta['classes']) == occ.OCC_CLASS_NAMES
        assert tuple(meta['thing_classes']) == occ.THING_CLASSES
    assert tuple(cfg.model.thing_classes) == occ.THING_CLASSES
    assert tuple(cfg.data_config['cams']) == occ.CAMERA_NAMES
    assert tuple(cfg.point_cloud_range) == occ.PC_RANGE
    assert tuple(cfg.occ_size) == occ.GRID_SHAPE
    assert cfg.num_classes == occ.NUM_CLASSES
    for axis, lo, hi in zip('xyz', occ.GRID_MIN, occ.GRID_MAX):
        assert tuple(cfg.grid_config[axis]) == (lo, hi, occ.VOXEL_SIZE)


def _flat(node, prefix=''):
    """{dotted key: value} of a nested config dict."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f'{prefix}{k}.'))
        return out
    return {prefix[:-1]: node}


LEARNING_CHECK = osp.join(ROOT, 'configs', 'trackocc',
                          'trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ{}.py')


@pytest.mark.parametrize('suffix,changed', [
    ('_no-memory-bank', {'model.memory_bank'}),
    ('_sparse-refine', {'model.refiner'}),
    ('_mask-pos-balance', {'model.track_criterion'}),
])
def test_learning_check_ablations_differ_from_the_base_by_their_subject(suffix, changed):
    """An ablation config of the learning check changes its one subject, nothing else (same
    data, schedule, seeds and every other model setting)."""
    base = _flat(Config.fromfile(LEARNING_CHECK.format('')).to_dict())
    ablation = _flat(Config.fromfile(LEARNING_CHECK.format(suffix)).to_dict())
    differ = {k for k in set(base) | set(ablation) if base.get(k) != ablation.get(k)}
    assert differ and all(any(k == c or k.startswith(c + '.') for c in changed)
                          for k in differ), sorted(differ)


def test_center_prior_ablation_adds_only_the_prior_to_the_recipe():
    """``_mask-pos-balance_center-prior`` is the mask-pos-balance recipe plus the head's
    ``mask_center_prior``, nothing else."""
    recipe = _flat(Config.fromfile(LEARNING_CHECK.format('_mask-pos-balance')).to_dict())
    prior = _flat(Config.fromfile(
        LEARNING_CHECK.format('_mask-pos-balance_center-prior')).to_dict())
    differ = {k for k in set(recipe) | set(prior) if recipe.get(k) != prior.get(k)}
    assert differ and all(k.startswith('model.pts_bbox_head.mask_center_prior.')
                          for k in differ), sorted(differ)


def test_fixed_spread_ablation_changes_only_learn_sigma():
    """``_center-prior-fixed-sigma`` is the centre-prior learning check with the spread kept
    at its start, nothing else."""
    prior = _flat(Config.fromfile(
        LEARNING_CHECK.format('_mask-pos-balance_center-prior')).to_dict())
    fixed = _flat(Config.fromfile(
        LEARNING_CHECK.format('_mask-pos-balance_center-prior-fixed-sigma')).to_dict())
    differ = {k for k in set(prior) | set(fixed) if prior.get(k) != fixed.get(k)}
    assert differ == {'model.pts_bbox_head.mask_center_prior.learn_sigma'}, sorted(differ)
    assert fixed['model.pts_bbox_head.mask_center_prior.learn_sigma'] is False


@pytest.mark.parametrize('parent,child,subject', [
    ('_mask-pos-balance', '_mask-pos-balance_center-loss-x10',
     'model.track_criterion.loss_center.'),
    ('_mask-pos-balance', '_mask-pos-balance_center-cost',
     'model.track_criterion.center_cost_weight'),
    ('_mask-pos-balance_center-loss-x10', '_mask-pos-balance_center-loss-x10_center-cost',
     'model.track_criterion.center_cost_weight'),
    ('_mask-pos-balance_center-prior-fixed-sigma',
     '_mask-pos-balance_center-prior-fixed-sigma_center-cost',
     'model.track_criterion.center_cost_weight'),
])
def test_centre_ablations_change_their_subject_only(parent, child, subject):
    """The centre-loss ablation changes the recipe's centre loss only; the centre-cost ones
    add the centre term to the matching of their parent and nothing else."""
    before = _flat(Config.fromfile(LEARNING_CHECK.format(parent)).to_dict())
    after = _flat(Config.fromfile(LEARNING_CHECK.format(child)).to_dict())
    differ = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert differ and all(k.startswith(subject) for k in differ), sorted(differ)
    if subject.endswith('center_cost_weight'):
        assert after[subject] == 0.25
    else:
        assert after['model.track_criterion.loss_center.loss_weight'] == pytest.approx(
            10 * 0.075)


def test_learning_check_from_the_paper_backbone_changes_only_its_start():
    """``_mask-pos-balance_nuim-r50`` is the mask-pos-balance learning check with the image
    backbone started, frozen and scaled as in the paper config, and nothing else changed."""
    recipe = _flat(Config.fromfile(LEARNING_CHECK.format('_mask-pos-balance')).to_dict())
    nuim = _flat(Config.fromfile(LEARNING_CHECK.format('_mask-pos-balance_nuim-r50')).to_dict())
    paper = _flat(Config.fromfile(osp.join(
        ROOT, 'configs', 'trackocc', 'trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py')).to_dict())
    differ = {k for k in set(recipe) | set(nuim) if recipe.get(k) != nuim.get(k)}
    backbone_keys = {k for k in paper if k.startswith('model.img_backbone.')}
    start = {'model.img_backbone.frozen_stages', 'model.img_backbone.norm_eval',
             'optim_wrapper.paramwise_cfg.custom_keys.img_backbone.lr_mult'}
    assert differ and differ <= start | backbone_keys, sorted(differ)
    for key in backbone_keys | start:
        assert nuim.get(key) == paper.get(key), key


def test_goal_config_unbounds_the_prior_and_adds_the_piece_tracker_only():
    """``_center-prior-unbounded_piece-tracking`` is the centre-prior learning check with the
    prior unbounded and test-time piece tracking, nothing else."""
    prior = _flat(Config.fromfile(
        LEARNING_CHECK.format('_mask-pos-balance_center-prior')).to_dict())
    goal = _flat(Config.fromfile(LEARNING_CHECK.format(
        '_mask-pos-balance_center-prior-unbounded_piece-tracking')).to_dict())
    differ = {k for k in set(prior) | set(goal) if prior.get(k) != goal.get(k)}
    assert differ == {'model.pts_bbox_head.mask_center_prior.max_penalty'} | {
        k for k in goal if k.startswith('model.piece_tracker.')}, sorted(differ)
    assert goal['model.pts_bbox_head.mask_center_prior.max_penalty'] is None
    assert goal['model.piece_tracker.type'] == 'PieceTracker'


def test_stuff_pos_balance_config_changes_only_the_stuff_mask_weight():
    """``..._piece-tracking_stuff-pos-balance`` is the goal config with the stuff segments'
    positives weighted in the mask BCE, nothing else."""
    goal = _flat(Config.fromfile(LEARNING_CHECK.format(
        '_mask-pos-balance_center-prior-unbounded_piece-tracking')).to_dict())
    stuff = _flat(Config.fromfile(LEARNING_CHECK.format(
        '_mask-pos-balance_center-prior-unbounded_piece-tracking_stuff-pos-balance')).to_dict())
    differ = {k for k in set(goal) | set(stuff) if goal.get(k) != stuff.get(k)}
    assert differ == {'model.pts_bbox_head.loss_stuff.type',
                      'model.pts_bbox_head.loss_stuff.mask_pos_balance'}, sorted(differ)
    assert stuff['model.pts_bbox_head.loss_stuff.mask_pos_balance'] == 0.05


def test_merge_refill_config_changes_only_the_merge():
    """``..._stuff-pos-balance_merge-refill`` scores the stuff-pos-balance model with the
    merge's refill, nothing else."""
    stuff = _flat(Config.fromfile(LEARNING_CHECK.format(
        '_mask-pos-balance_center-prior-unbounded_piece-tracking_stuff-pos-balance')).to_dict())
    refill = _flat(Config.fromfile(LEARNING_CHECK.format(
        '_mask-pos-balance_center-prior-unbounded_piece-tracking_stuff-pos-balance'
        '_merge-refill')).to_dict())
    differ = {k for k in set(stuff) | set(refill) if stuff.get(k) != refill.get(k)}
    assert differ == {'model.merge_refill'} and refill['model.merge_refill'] is True
