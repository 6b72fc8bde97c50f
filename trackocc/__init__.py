"""trackocc: camera-based 4D panoptic occupancy tracking on MMEngine / mmdet3d 1.x.

Importing the package registers every dataset, transform, model, metric, hook and visualizer
into the mmdet3d registries (configs use ``default_scope='mmdet3d'`` and
``custom_imports=dict(imports=['trackocc'])``) and makes MMEngine checkpoints resumable under
torch>=2.6 (see :mod:`trackocc.utils.checkpoint_compat`).
"""
from .version import __version__
from .utils import register_checkpoint_safe_globals

register_checkpoint_safe_globals()

from . import datasets, engine, evaluation, models, ops, visualization  # noqa: E402,F401

__all__ = ['__version__']
