"""Datasets, transforms and samplers (registered in :mod:`trackocc.registry`).

Public names are imported on first use, so the light data modules (``synthetic``,
``data_checker``) load without torch / mmdet3d.
"""
from ..utils.lazy_exports import lazy_exports

_EXPORTS = {
    'WaymoTrackOccDataset': '.waymo_trackocc_dataset',
    'ClipSampler': '.samplers',
    'SequenceStreamSampler': '.samplers',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
