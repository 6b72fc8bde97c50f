"""Training / evaluation hooks and weight averaging."""
from . import hooks  # noqa: F401
from .averaged_models import RampedDecayEMA
from .hooks import FastInferenceHook, InitialWeightsEMAHook, OccVisualizationHook

__all__ = ['RampedDecayEMA', 'FastInferenceHook', 'InitialWeightsEMAHook', 'OccVisualizationHook']
