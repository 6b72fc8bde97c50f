"""`import trackocc` registers the package into the mmdet3d registries used by the configs."""
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import trackocc  # noqa: F401
from mmdet3d.registry import DATA_SAMPLERS, DATASETS, METRICS, MODELS, TRANSFORMS

EXPECTED = {
    MODELS: ['TrackOcc', 'TrackOccDataPreprocessor', 'LSSViewTransformerBEVDepth', 'CustomResNet3D',
             'LSSFPN3D', 'OccupancyEncoder', 'SpatialCrossAttention', 'DeformableAttention3D',
             'LearnedPositionalEncoding3D', 'MaskFeatureUpsampler', 'TrackOccHead', 'MaskDecoder',
             'QueryInteractionModule', 'MemoryBank', 'ClipMatcher', 'StuffMaskLoss',
             'SparseVoxelRefiner'],
    DATASETS: ['WaymoTrackOccDataset'],
    TRANSFORMS: ['LoadMultiViewImages', 'MultiViewImageAugmentation', 'PointsToMultiViewDepth',
                 'LoadPanopticOccupancy', 'PackTrackOccInputs'],
    METRICS: ['OccSTQMetric'],
    DATA_SAMPLERS: ['ClipSampler', 'SequenceStreamSampler'],
}


@pytest.mark.parametrize('registry', list(EXPECTED), ids=lambda r: r.name)
def test_trackocc_modules_are_in_the_mmdet3d_registries(registry):
    for name in EXPECTED[registry]:
        cls = registry.module_dict.get(name)
        assert cls is not None, f'{name} not registered in mmdet3d {registry.name}'
        assert cls.__module__.startswith('trackocc.'), (name, cls.__module__)


def test_configs_resolve_library_parts_through_the_default_scope():
    cfg = Config.fromfile('configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py')
    assert cfg.default_scope == 'mmdet3d'
    assert cfg.custom_imports == dict(imports=['trackocc'], allow_failed_imports=False)
    init_default_scope('mmdet3d')
    assert MODELS.get(cfg.model.img_backbone.type).__module__.startswith('mmdet.')
    assert MODELS.get(cfg.model.img_neck.type).__module__.startswith('mmdet.')
    assert MODELS.get(cfg.model.type).__module__.startswith('trackocc.')
