"""Training / evaluation hooks, weight averaging, and crash-safe checkpoint files and RNG states
for exact resume."""
from . import hooks  # noqa: F401
from .averaged_models import RampedDecayEMA
from .checkpoint_files import (AtomicLocalBackend, CheckpointFileError, checkpoint_problem,
                               find_resume_checkpoint, resolve_resume_checkpoint)
from .hooks import (FastInferenceHook, InitialWeightsEMAHook, OccVisualizationHook,
                    SafeCheckpointHook)
from .rng_state import get_rng_states, set_rng_states

__all__ = ['RampedDecayEMA', 'InitialWeightsEMAHook', 'FastInferenceHook',
           'OccVisualizationHook', 'SafeCheckpointHook',
           'AtomicLocalBackend', 'CheckpointFileError', 'checkpoint_problem',
           'find_resume_checkpoint', 'resolve_resume_checkpoint', 'get_rng_states',
           'set_rng_states']
