"""Training / evaluation hooks, weight averaging, and crash-safe checkpoint files and RNG states
for exact resume.

Importing this package (configs do, through ``custom_imports``) also allow-lists the objects of
MMEngine checkpoints for ``torch.load(weights_only=True)`` (torch>=2.6), so ``resume`` and
``load_from`` work (:mod:`trackocc.utils.checkpoint_compat`).
"""
from ..utils.checkpoint_compat import register_checkpoint_safe_globals

register_checkpoint_safe_globals()

from . import hooks  # noqa: E402,F401
from .averaged_models import MultiTensorExpMomentumEMA, RampedDecayEMA  # noqa: E402
from .checkpoint_files import (  # noqa: E402
    AtomicLocalBackend, CheckpointFileError, checkpoint_problem, find_resume_checkpoint,
    resolve_resume_checkpoint)
from .deferred_scalars import DeferredScalars  # noqa: E402
from .model_wrappers import HostSyncFreeDDP  # noqa: E402
from .optim_constructors import MergedGroupsOptimWrapperConstructor  # noqa: E402
from .optim_wrappers import (HostSyncFreeAmpOptimWrapper,  # noqa: E402
                             HostSyncFreeOptimWrapper)
from .hooks import (FastInferenceHook, HostSyncFreeRuntimeInfoHook,  # noqa: E402
                    InitialWeightsEMAHook, OccVisualizationHook, SafeCheckpointHook)
from .rng_state import get_rng_states, set_rng_states  # noqa: E402

__all__ = ['HostSyncFreeDDP', 'MergedGroupsOptimWrapperConstructor', 'RampedDecayEMA',
           'MultiTensorExpMomentumEMA', 'DeferredScalars', 'HostSyncFreeOptimWrapper',
           'HostSyncFreeAmpOptimWrapper', 'HostSyncFreeRuntimeInfoHook',
           'InitialWeightsEMAHook', 'FastInferenceHook',
           'OccVisualizationHook', 'SafeCheckpointHook',
           'AtomicLocalBackend', 'CheckpointFileError', 'checkpoint_problem',
           'find_resume_checkpoint', 'resolve_resume_checkpoint', 'get_rng_states',
           'set_rng_states']
