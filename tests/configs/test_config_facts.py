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
