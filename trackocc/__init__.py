"""trackocc: camera-based 4D panoptic occupancy tracking on MMEngine / mmdet3d 1.x.

``import trackocc`` is light: it imports no torch, model, dataset or op. Configs set
``default_scope='trackocc'``; building from them goes through the registry nodes of
:mod:`trackocc.registry` (children of mmdet3d's), whose first lookup imports the subpackage
that registers into it. ``custom_imports=dict(imports=['trackocc.engine'])`` in the configs
imports the hooks and makes MMEngine checkpoints resumable under torch>=2.6
(:mod:`trackocc.utils.checkpoint_compat`).
"""
from .version import __version__

__all__ = ['__version__']
