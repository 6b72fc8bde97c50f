"""Detectors: the TrackOcc clip-trained, stream-inferring 4D occupancy tracker."""
from .trackocc import TrackOcc

__all__ = ['TrackOcc']
