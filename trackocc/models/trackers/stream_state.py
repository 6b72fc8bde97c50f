"""Streaming state between two inference frames, with the end of a frame's tracking deferred.

The last steps of a frame (memory bank, query interaction on the active tracks) only build
the next frame's queries. :class:`TrackOcc` runs them at the start of the next frame, after
launching its image and volume encoders, which do not depend on the tracks: their host work
then overlaps the encoder's GPU work instead of following it. Selecting the active tracks
needs their number on the host; it is copied to pinned memory when the frame ends and an
event marks the copy, so reading it waits for that point of the stream only, not for the
encoder work queued after it.
"""
from typing import Callable

from trackocc.utils.host_copy import HostCopy
from .track_instances import TrackInstances


class StreamState(dict):
    """``dict(ego2global=..., sequence_id=..., pending=TrackInstances, num_active=...)``.

    :meth:`next_queries` builds the next frame's queries from ``pending`` with ``finish``
    (once; they are then stored under ``'tracks'``).
    """

    def __init__(self, finish: Callable[['StreamState'], TrackInstances], **fields):
        super().__init__(**fields)
        self._finish = finish

    def set_pending(self, tracks: TrackInstances) -> None:
        """Tracks at the end of a frame; their active count is copied to the host
        asynchronously (CUDA) and marked by an event."""
        self.pop('tracks', None)
        self.update(pending=tracks, num_active=HostCopy((tracks.obj_idxes >= 0).sum()))

    def num_active(self) -> int:
        """Active tracks of ``pending`` (waits for the end-of-frame copy only)."""
        return int(self['num_active'].result())

    def has_pending(self) -> bool:
        """Whether the frame's end is still deferred (:meth:`next_queries` not called)."""
        return 'pending' in self

    def take_pending(self) -> TrackInstances:
        """The tracks the frame ended with, for a caller that builds the next frame's queries
        itself (``TrackOcc``'s fixed-rows carry); the state holds no tracks afterwards."""
        tracks = self.pop('pending')
        self.pop('num_active')
        return tracks

    def next_queries(self) -> TrackInstances:
        """The next frame's queries: the deferred end of the frame (``finish``: memory bank,
        query interaction) runs on the first call and replaces ``pending``; later calls
        return the stored ``'tracks'``."""
        if 'tracks' not in self:
            if 'pending' not in self:
                raise KeyError('StreamState.next_queries: no tracks were set (set_pending)')
            tracks = self._finish(self)
            for k in ('pending', 'num_active'):
                self.pop(k)
            self['tracks'] = tracks
        return self['tracks']
