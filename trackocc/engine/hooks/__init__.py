"""Hooks registered into ``mmdet3d.registry.HOOKS``."""
from .fast_inference_hook import FastInferenceHook
from .occ_visualization_hook import OccVisualizationHook

__all__ = ['FastInferenceHook', 'OccVisualizationHook']
