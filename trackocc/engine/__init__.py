"""Training / evaluation hooks."""
from . import hooks  # noqa: F401
from .hooks import FastInferenceHook, OccVisualizationHook

__all__ = ['FastInferenceHook', 'OccVisualizationHook']
