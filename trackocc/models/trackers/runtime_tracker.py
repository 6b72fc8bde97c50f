"""Runtime tracker: id birth, miss counting and death of track queries at inference (MOTR)."""
import torch
from torch import Tensor

from trackocc.registry import MODELS
from .track_instances import TrackInstances


@MODELS.register_module()
class RuntimeTracker:
    """Assigns persistent ids to confident track queries and retires lost ones.

    Built from the detector's ``tracker`` config (``dict(type='RuntimeTracker', ...)``); it
    holds every inference score threshold of the tracks: births, misses, deaths and which
    tracks a frame outputs (:meth:`output_mask`).

    Per frame, for each query with score ``s`` (max class probability, see
    ``TrackOcc.track_score_classes``):

    - ``s >= score_thresh``: the query is confident; its miss count is reset to 0, and a
      query without id (-1) is born with the next free id (ids count from 0 within a
      sequence, in query order);
    - a query with an id and ``s < filter_score_thresh`` misses this frame (its count goes
      up by one); once the count reaches ``miss_tolerance`` its id is dropped (-1, the query
      dies);
    - ``filter_score_thresh <= s < score_thresh`` neither counts nor resets: the count is the
      number of misses since the last confident frame, not of consecutive misses (the
      original's rule, MOTR's RuntimeTrackerBase).

    With ``birth_needs_output`` (not the original's rule; off by default), a query born in a
    frame keeps its id only if the panoptic merge outputs it in that frame
    (:meth:`drop_hidden_births`): a confident query whose mask the merge gives to another
    prediction (a duplicate) is not carried as a track. In training only matched queries
    (and the sampled false positives) are carried, so duplicates never become tracks there.

    Args:
        score_thresh (float): birth and reset threshold. Defaults to 0.3.
        filter_score_thresh (float): below it a track with an id misses the frame; at or above
            it the track is output (:meth:`output_mask`). Defaults to 0.25.
        miss_tolerance (int): misses since the last confident frame before a track dies.
            Defaults to 3.
        birth_needs_output (bool): a query born in a frame dies again unless the merge
            outputs it in that frame. Defaults to False (the original).
    """

    def __init__(self,
                 score_thresh: float = 0.3,
                 filter_score_thresh: float = 0.25,
                 miss_tolerance: int = 3,
                 birth_needs_output: bool = False) -> None:
        if not 0 <= filter_score_thresh <= score_thresh <= 1:
            raise ValueError('RuntimeTracker needs 0 <= filter_score_thresh <= score_thresh <= 1,'
                             f' got {filter_score_thresh} and {score_thresh}')
        if miss_tolerance < 1:
            raise ValueError(f'miss_tolerance must be >= 1, got {miss_tolerance}')
        self.score_thresh = score_thresh
        self.filter_score_thresh = filter_score_thresh
        self.miss_tolerance = miss_tolerance
        self.birth_needs_output = birth_needs_output
        self.reset()

    def reset(self) -> None:
        """Start a new sequence: ids count from 0 again."""
        # next free id, a 0-dim long tensor; a CPU scalar until the first update makes it a
        # tensor on the tracks' device (a CPU scalar mixes with device tensors without a copy)
        self.max_obj_id = torch.zeros((), dtype=torch.long)

    @torch.no_grad()
    def update(self, tracks: TrackInstances) -> TrackInstances:
        """Update ``obj_idxes`` and ``disappear_time`` (the miss count) of ``tracks`` in
        place from their ``scores``.

        Runs without host-device synchronisation: born queries take ``max_obj_id`` + their
        rank among the born (cumsum), and ``max_obj_id`` stays a device tensor.
        """
        self.max_obj_id = self.assign(tracks, self.next_id(tracks.obj_idxes.device))
        return tracks

    def next_id(self, device: torch.device) -> Tensor:
        """The next free id as a 0-dim long tensor for tracks on ``device``: the kept one, set
        from Python or moved along with the tracks where needed (a CPU scalar mixes with
        device tensors without a copy)."""
        if not torch.is_tensor(self.max_obj_id):  # set from Python
            self.max_obj_id = torch.tensor(int(self.max_obj_id), dtype=torch.long)
        elif self.max_obj_id.device != device and self.max_obj_id.device.type != 'cpu':
            self.max_obj_id = self.max_obj_id.to(device)  # tracks moved to another device
        return self.max_obj_id

    @torch.no_grad()
    def assign(self, tracks: TrackInstances, max_obj_id: Tensor) -> Tensor:
        """:meth:`update`'s rule with the next free id given (``max_obj_id``, see
        :meth:`next_id`) and the next one returned instead of kept, so that the tracker's
        state can pass through a caller (e.g. a CUDA graph of a frame's update). Updates
        ``obj_idxes`` and ``disappear_time`` of ``tracks`` in place."""
        scores = tracks.scores
        obj_idxes = tracks.obj_idxes  # (Q,) long
        disappear_time = tracks.disappear_time  # (Q,) long
        confident = scores >= self.score_thresh
        born = (obj_idxes == -1) & confident
        missed = (obj_idxes >= 0) & (scores < self.filter_score_thresh)

        disappear_time.masked_fill_(confident, 0)
        rank = torch.cumsum(born, 0)  # (Q,) born queries up to and including this one
        obj_idxes.copy_(torch.where(born, rank - 1 + max_obj_id, obj_idxes))
        disappear_time.add_(missed.to(disappear_time.dtype))
        obj_idxes.masked_fill_(missed & (disappear_time >= self.miss_tolerance), -1)
        return rank[-1] + max_obj_id if len(rank) else max_obj_id

    def output_mask(self, tracks: TrackInstances) -> Tensor:
        """(Q,) bool: the tracks a frame outputs after :meth:`update`: those with an id and a
        score of at least ``filter_score_thresh``."""
        return (tracks.obj_idxes >= 0) & (tracks.scores >= self.filter_score_thresh)

    @torch.no_grad()
    def drop_hidden_births(self, tracks: TrackInstances, unborn: Tensor,
                           instances: Tensor) -> None:
        """The rule of ``birth_needs_output`` (its caller checks the option): the queries that
        :meth:`update` gave an id in this frame (``unborn``: (Q,) bool, no id before it) and
        that the merged ``instances`` (N,) (track id + 1 per voxel) do not show lose their id
        again (-1), in place; their ids are not reused. Nothing is read back to the host here
        (whether ``torch.isin`` synchronises on CUDA is not measured)."""
        shown = torch.isin((tracks.obj_idxes + 1).to(instances.dtype), instances)
        tracks.obj_idxes.masked_fill_(unborn & (tracks.obj_idxes >= 0) & ~shown, -1)
