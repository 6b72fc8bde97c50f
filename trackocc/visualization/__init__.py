"""Occupancy visualization: BEV and isometric 3D renders, figures, GIFs, the visualizer."""
from .bev_render import bev_columns, render_bev
from .isometric_render import isometric_canvas_size, render_isometric
from .occupancy_visualizer import OccupancyVisualizer
from .palette import class_colors, class_names, instance_colors, tint_instances
from .sequence_gif import write_gif

__all__ = [
    'OccupancyVisualizer', 'render_bev', 'bev_columns', 'render_isometric',
    'isometric_canvas_size', 'class_colors', 'class_names', 'instance_colors', 'tint_instances',
    'write_gif'
]
