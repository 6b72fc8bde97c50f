"""The tracking of a streamed frame under fixed track rows as two module calls (each one CUDA
graph in the fast path): carrying the tracks into the frame, and settling them after the head."""
from typing import Dict, Tuple

from torch import Tensor, nn

from ..trackers import RuntimeTracker, TrackInstances


class _DetectorStep(nn.Module):
    """A parameter-free module that runs one step of the detector it belongs to. The detector
    is held outside the module tree (its state dict and ``modules()`` are unchanged); a deep
    copy of the detector carries a step that runs the copy."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self._detector = (detector, )  # a tuple: not registered as a sub-module


class TrackCarry(_DetectorStep):
    """The next frame's queries from the tracks a frame ended with, under
    ``TrackOcc.fixed_track_rows``: the active rows and then filler rows up to the query budget,
    the memory bank, the query interaction and the reference points' ego alignment to the new
    frame, in one call on fixed shapes without a host synchronisation
    (``TrackOcc.carry_tracks``). A :class:`~trackocc.utils.cuda_graph.CUDAGraphModule` replays
    it as one graph, the memory bank and the query interaction inside it (they are then not
    graphed on their own), where the glue between them would otherwise run op by op.
    """

    def forward(self, tracks: TrackInstances, prev2curr: Tensor) -> TrackInstances:
        """``tracks``: the budget's rows a frame ended with; ``prev2curr``: (4, 4) float32
        transform from that frame's ego frame to the new one, on the tracks' device. Returns
        the new frame's budget rows (fresh queries, carried tracks, filler)."""
        return self._detector[0].carry_tracks(tracks, prev2curr)


class TrackSettle(_DetectorStep):
    """A frame's tracks after the head, under ``TrackOcc.fixed_track_rows``: the head's scores,
    logits, centres and embeddings recorded, new reference points, the tracker's births, misses
    and deaths, and the panoptic merge (``TrackOcc.settle_tracks``), in one call on fixed
    shapes without a host synchronisation: one CUDA graph in the fast path (the merge inside
    it, then not graphed on its own).

    The returned tracks hold new tensors only (the given ones are copied first and never
    written), so that a graph of this step never returns, nor writes into, a tensor it reads
    in place from another graph (the carried tracks).
    """

    def forward(self, tracks: TrackInstances, out: Dict, max_obj_id: Tensor,
                tracker: RuntimeTracker) -> Tuple[TrackInstances, Tensor, Tensor, Tensor]:
        """``tracks``: the frame's budget rows; ``out``: the head's outputs for them;
        ``max_obj_id``: the tracker's next free id (0-dim long, on the tracks' device).
        Returns the tracks, the merged semantics and instance ids (N,) and the next free id."""
        return self._detector[0].settle_tracks(tracks.copy_tensors(), out, max_obj_id,
                                               tracker)
