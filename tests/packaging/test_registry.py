"""trackocc's registry nodes: children of mmdet3d's in the ``trackocc`` scope, filled on first
lookup from their ``locations``; the configs build through them."""
import subprocess
import sys

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmdet3d.registry as mmdet3d_registry
from trackocc import registry

EXPECTED = {
    registry.MODELS: ['TrackOcc', 'TrackOccDataPreprocessor', 'LSSViewTransformerBEVDepth',
                      'CustomResNet3D', 'LSSFPN3D', 'OccupancyEncoder', 'SpatialCrossAttention',
                      'DeformableAttention3D', 'LearnedPositionalEncoding3D',
                      'MaskFeatureUpsampler', 'TrackOccHead', 'MaskDecoder',
                      'QueryInteractionModule', 'MemoryBank', 'ClipMatcher', 'StuffMaskLoss',
                      'SparseVoxelRefiner', 'RampedDecayEMA'],
    registry.TASK_UTILS: ['VoxelMaskCrossEntropyCost'],
    registry.DATASETS: ['WaymoTrackOccDataset'],
    registry.TRANSFORMS: ['LoadMultiViewImages', 'MultiViewImageAugmentation',
                          'PointsToMultiViewDepth', 'LoadPanopticOccupancy', 'PackTrackOccInputs'],
    registry.METRICS: ['OccSTQMetric'],
    registry.DATA_SAMPLERS: ['ClipSampler', 'SequenceStreamSampler'],
    registry.HOOKS: ['SafeCheckpointHook', 'InitialWeightsEMAHook', 'FastInferenceHook',
                     'OccVisualizationHook'],
    registry.VISUALIZERS: ['OccupancyVisualizer'],
}


def test_every_node_is_a_trackocc_child_of_the_mmdet3d_node():
    for name in dir(mmdet3d_registry):
        parent = getattr(mmdet3d_registry, name)
        if name.startswith('MMENGINE_') or not isinstance(parent, type(registry.MODELS)):
            continue
        node = getattr(registry, name, None)
        assert node is not None, f'trackocc.registry has no {name}'
        assert node.scope == 'trackocc' and node.parent is parent, name
        assert parent._children['trackocc'] is node, name


@pytest.mark.parametrize('node', list(EXPECTED), ids=lambda r: r.name)
def test_first_lookup_imports_the_locations(node):
    for name in EXPECTED[node]:
        cls = node.get(name)  # get() imports the node's locations
        assert cls is not None and name in node.module_dict, f'{name} not in trackocc {node.name}'
        assert cls.__module__.startswith('trackocc.'), (name, cls.__module__)
        assert name not in node.parent.module_dict, f'{name} also registered in mmdet3d'


def test_plain_names_fall_back_to_mmdet3d_and_mmengine():
    assert registry.TRANSFORMS.get('LoadPointsFromFile').__module__.startswith('mmdet3d.')
    assert registry.MODELS.get('Det3DDataPreprocessor').__module__.startswith('mmdet3d.')
    assert registry.HOOKS.get('CheckpointHook').__module__.startswith('mmengine.')
    assert registry.MODELS.get('mmdet.ResNet').__module__.startswith('mmdet.')


def test_configs_resolve_library_parts_through_the_default_scope():
    from mmengine.registry import MODELS  # the root: builds switch to the default scope's node
    cfg = Config.fromfile('configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py')
    assert cfg.default_scope == 'trackocc'
    assert cfg.custom_imports == dict(imports=['trackocc.engine'], allow_failed_imports=False)
    with DefaultScope.overwrite_default_scope('trackocc'):
        with MODELS.switch_scope_and_registry(None) as node:
            assert node is registry.MODELS
            assert node.get(cfg.model.img_backbone.type).__module__.startswith('mmdet.')
            assert node.get(cfg.model.img_neck.type).__module__.startswith('mmdet.')
            assert node.get(cfg.model.type).__module__.startswith('trackocc.')


def test_building_a_trackocc_part_in_a_fresh_process_imports_its_subpackage():
    """Scope + registry only, no explicit import of trackocc's subpackages."""
    code = ('import sys\n'
            'from mmengine.registry import TRANSFORMS, init_default_scope\n'
            'init_default_scope("trackocc")\n'
            'assert "trackocc.datasets.transforms" not in sys.modules\n'
            't = TRANSFORMS.build(dict(type="PackTrackOccInputs"))\n'
            'assert type(t).__module__.startswith("trackocc.datasets.transforms"), type(t)\n'
            'assert "trackocc.models" not in sys.modules\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
