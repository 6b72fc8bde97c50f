"""Tracking parts: track instances, query interaction, memory bank, runtime tracker and
reference-point ego-motion alignment."""
from .ego_motion import (align_ref_points, denormalize_points, inverse_sigmoid,
                         normalize_points, relative_ego_transform)
from .memory_bank import MemoryBank
from .piece_tracker import PieceTracker
from .query_interaction import QueryInteractionModule
from .runtime_tracker import RuntimeTracker
from .stream_state import StreamState
from .track_instances import TRACK_FIELDS, TrackInstances, build_empty_tracks, cat_tracks

__all__ = [
    'TrackInstances', 'TRACK_FIELDS', 'build_empty_tracks', 'cat_tracks',
    'QueryInteractionModule', 'MemoryBank', 'PieceTracker', 'RuntimeTracker', 'StreamState',
    'align_ref_points',
    'relative_ego_transform', 'inverse_sigmoid', 'normalize_points', 'denormalize_points'
]
