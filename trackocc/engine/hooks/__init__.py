"""Hooks registered into ``mmdet3d.registry.HOOKS``."""
from .occ_visualization_hook import OccVisualizationHook

__all__ = ['OccVisualizationHook']
