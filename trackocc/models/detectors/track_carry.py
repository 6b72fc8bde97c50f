"""The tracks carried from one streamed frame to the next under fixed track rows, as one
module call (one CUDA graph in the fast path)."""
from torch import Tensor, nn

from ..trackers import TrackInstances


class TrackCarry(nn.Module):
    """The next frame's queries from the tracks a frame ended with, under
    ``TrackOcc.fixed_track_rows``: the active rows and then filler rows up to the query budget,
    the memory bank, the query interaction and the reference points' ego alignment to the new
    frame, in one call on fixed shapes without a host synchronisation
    (``TrackOcc.carry_tracks``). A :class:`~trackocc.utils.cuda_graph.CUDAGraphModule` replays
    it as one graph, the memory bank and the query interaction inside it (they are then not
    graphed on their own), where the glue between them would otherwise run op by op.

    It has no parameters: the detector's modules do the work. The detector is held outside the
    module tree (its state dict and ``modules()`` are unchanged).
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self._detector = (detector, )  # a tuple: not registered as a sub-module

    def forward(self, tracks: TrackInstances, prev2curr: Tensor) -> TrackInstances:
        """``tracks``: the budget's rows a frame ended with; ``prev2curr``: (4, 4) float32
        transform from that frame's ego frame to the new one, on the tracks' device. Returns
        the new frame's budget rows (fresh queries, carried tracks, filler)."""
        return self._detector[0].carry_tracks(tracks, prev2curr)
