"""Datasets, transforms and samplers (registered into the mmdet3d registries on import)."""
from . import transforms  # noqa: F401
from .samplers import ClipSampler, SequenceStreamSampler
from .waymo_trackocc_dataset import WaymoTrackOccDataset

__all__ = ['WaymoTrackOccDataset', 'ClipSampler', 'SequenceStreamSampler']
