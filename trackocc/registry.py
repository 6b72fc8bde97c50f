"""trackocc's registry nodes: children of mmdet3d's, in the ``trackocc`` scope.

Configs set ``default_scope='trackocc'``. Building from any registry under that scope looks a
name up here first and then in mmdet3d and MMEngine (the parents), so mmdet3d's and MMEngine's
parts keep their plain names; mmdet's are named ``'mmdet.X'`` as before. The first lookup in a
node imports its ``locations`` (the trackocc subpackage that registers into it, after
mmdet3d's own modules, so that a name found in the parent is registered too): ``import
trackocc`` alone imports no model, dataset or op.

Register with ``from trackocc.registry import MODELS`` and ``@MODELS.register_module()``.
A scoped name ``'trackocc.X'`` resolves under the ``trackocc`` default scope only: MMEngine
looks scoped names up among the root registries' children, and these nodes are grandchildren
(package defaults that mmdet's registries build, e.g. match costs, give the class itself).
"""
from mmdet3d.registry import DATA_SAMPLERS as MMDET3D_DATA_SAMPLERS
from mmdet3d.registry import DATASETS as MMDET3D_DATASETS
from mmdet3d.registry import EVALUATOR as MMDET3D_EVALUATOR
from mmdet3d.registry import HOOKS as MMDET3D_HOOKS
from mmdet3d.registry import INFERENCERS as MMDET3D_INFERENCERS
from mmdet3d.registry import LOG_PROCESSORS as MMDET3D_LOG_PROCESSORS
from mmdet3d.registry import LOOPS as MMDET3D_LOOPS
from mmdet3d.registry import METRICS as MMDET3D_METRICS
from mmdet3d.registry import MODEL_WRAPPERS as MMDET3D_MODEL_WRAPPERS
from mmdet3d.registry import MODELS as MMDET3D_MODELS
from mmdet3d.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMDET3D_OPTIM_WRAPPER_CONSTRUCTORS
from mmdet3d.registry import OPTIM_WRAPPERS as MMDET3D_OPTIM_WRAPPERS
from mmdet3d.registry import OPTIMIZERS as MMDET3D_OPTIMIZERS
from mmdet3d.registry import PARAM_SCHEDULERS as MMDET3D_PARAM_SCHEDULERS
from mmdet3d.registry import RUNNER_CONSTRUCTORS as MMDET3D_RUNNER_CONSTRUCTORS
from mmdet3d.registry import RUNNERS as MMDET3D_RUNNERS
from mmdet3d.registry import TASK_UTILS as MMDET3D_TASK_UTILS
from mmdet3d.registry import TRANSFORMS as MMDET3D_TRANSFORMS
from mmdet3d.registry import VISBACKENDS as MMDET3D_VISBACKENDS
from mmdet3d.registry import VISUALIZERS as MMDET3D_VISUALIZERS
from mmdet3d.registry import WEIGHT_INITIALIZERS as MMDET3D_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = 'trackocc'


def _child(parent: Registry, *locations: str) -> Registry:
    """A ``trackocc`` node under ``parent`` importing the parent's locations, then ours."""
    # Registry keeps its locations private; mmdet3d's are needed for names that fall back to it
    inherited = [loc for loc in getattr(parent, '_locations', []) if loc not in locations]
    return Registry(parent.name, parent=parent, scope=SCOPE,
                    locations=inherited + list(locations))


RUNNERS = _child(MMDET3D_RUNNERS)
RUNNER_CONSTRUCTORS = _child(MMDET3D_RUNNER_CONSTRUCTORS)
LOOPS = _child(MMDET3D_LOOPS)
HOOKS = _child(MMDET3D_HOOKS, 'trackocc.engine.hooks')

DATASETS = _child(MMDET3D_DATASETS, 'trackocc.datasets.waymo_trackocc_dataset')
DATA_SAMPLERS = _child(MMDET3D_DATA_SAMPLERS, 'trackocc.datasets.samplers')
TRANSFORMS = _child(MMDET3D_TRANSFORMS, 'trackocc.datasets.transforms')

MODELS = _child(MMDET3D_MODELS, 'trackocc.models', 'trackocc.engine.averaged_models')
MODEL_WRAPPERS = _child(MMDET3D_MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(MMDET3D_WEIGHT_INITIALIZERS)

OPTIMIZERS = _child(MMDET3D_OPTIMIZERS)
OPTIM_WRAPPERS = _child(MMDET3D_OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(MMDET3D_OPTIM_WRAPPER_CONSTRUCTORS,
                                    'trackocc.engine.optim_constructors')
PARAM_SCHEDULERS = _child(MMDET3D_PARAM_SCHEDULERS)

METRICS = _child(MMDET3D_METRICS, 'trackocc.evaluation.metrics')
EVALUATOR = _child(MMDET3D_EVALUATOR)

TASK_UTILS = _child(MMDET3D_TASK_UTILS, 'trackocc.models')

VISUALIZERS = _child(MMDET3D_VISUALIZERS, 'trackocc.visualization.occupancy_visualizer')
VISBACKENDS = _child(MMDET3D_VISBACKENDS)

LOG_PROCESSORS = _child(MMDET3D_LOG_PROCESSORS)
INFERENCERS = _child(MMDET3D_INFERENCERS)
