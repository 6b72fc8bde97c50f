"""Datasets, transforms and samplers (registered into the mmdet3d registries on import)."""
from . import transforms  # noqa: F401
from .samplers import ClipSampler, SequenceStreamSampler
from .waymo_trackocc_dataset import (CAMERAS, OCC_CLASSES, THING_CLASSES, WaymoTrackOccDataset,
                                     split_sample_idx)

__all__ = [
    'WaymoTrackOccDataset', 'ClipSampler', 'SequenceStreamSampler', 'OCC_CLASSES',
    'THING_CLASSES', 'CAMERAS', 'split_sample_idx'
]
