"""Data preprocessors (registered in ``mmdet3d.registry.MODELS``)."""
from .track_occ_data_preprocessor import TrackOccDataPreprocessor

__all__ = ['TrackOccDataPreprocessor']
