"""Training / evaluation hooks."""
from . import hooks  # noqa: F401
from .hooks import OccVisualizationHook

__all__ = ['OccVisualizationHook']
