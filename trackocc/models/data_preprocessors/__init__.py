"""Data preprocessors (registered in ``trackocc.registry.MODELS``)."""
from .track_occ_data_preprocessor import TrackOccDataPreprocessor

__all__ = ['TrackOccDataPreprocessor']
