"""Heads: the TrackOcc 4D panoptic query head and its inference-time panoptic merge."""
from .panoptic_merge import PanopticMerge, merge_panoptic
from .trackocc_head import TrackOccHead

__all__ = ['PanopticMerge', 'TrackOccHead', 'merge_panoptic']
