"""Runtime tracker: id birth, miss counting and death of track queries at inference (MOTR)."""
import torch

from .track_instances import TrackInstances


class RuntimeTracker:
    """Assigns persistent ids to confident track queries and retires lost ones.

    Per frame, for each query with score ``s`` (max thing-class probability):

    - ``s >= score_thresh`` resets its miss counter; a query without id (-1) is born with
      the next free id (ids count from 0 within a sequence, in query order);
    - a query with an id and ``s < filter_score_thresh`` misses this frame; after
      ``miss_tolerance`` consecutive misses its id is dropped (-1, the query dies).

    Args:
        score_thresh (float): birth / keep-alive threshold. Defaults to 0.3.
        filter_score_thresh (float): below this a live track counts a miss. Defaults to 0.25.
        miss_tolerance (int): misses before a track dies. Defaults to 3.
    """

    def __init__(self,
                 score_thresh: float = 0.3,
                 filter_score_thresh: float = 0.25,
                 miss_tolerance: int = 3) -> None:
        if not 0 <= filter_score_thresh <= score_thresh <= 1:
            raise ValueError('RuntimeTracker needs 0 <= filter_score_thresh <= score_thresh <= 1,'
                             f' got {filter_score_thresh} and {score_thresh}')
        if miss_tolerance < 1:
            raise ValueError(f'miss_tolerance must be >= 1, got {miss_tolerance}')
        self.score_thresh = score_thresh
        self.filter_score_thresh = filter_score_thresh
        self.miss_tolerance = miss_tolerance
        self.max_obj_id = 0

    def reset(self) -> None:
        """Start a new sequence: ids count from 0 again."""
        self.max_obj_id = 0

    @torch.no_grad()
    def update(self, tracks: TrackInstances) -> TrackInstances:
        """Update ``obj_idxes`` and ``disappear_time`` of ``tracks`` in place (uses ``scores``)."""
        scores = tracks.scores
        obj_idxes = tracks.obj_idxes
        confident = scores >= self.score_thresh
        born = (obj_idxes == -1) & confident
        missed = (obj_idxes >= 0) & (scores < self.filter_score_thresh)

        tracks.disappear_time[confident] = 0
        num_born = int(born.sum())
        if num_born:
            obj_idxes[born] = torch.arange(
                self.max_obj_id, self.max_obj_id + num_born, device=obj_idxes.device)
            self.max_obj_id += num_born
        tracks.disappear_time[missed] += 1
        obj_idxes[missed & (tracks.disappear_time >= self.miss_tolerance)] = -1
        return tracks
