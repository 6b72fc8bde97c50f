"""A fixed number of thing-query rows for the head at inference (``TrackOcc.query_budget``):
the fresh queries and live tracks padded to the budget, so the head's shapes are the same
every frame (and it can run as a CUDA graph); the padding rows' outputs are dropped.

With ``TrackOcc.fixed_track_rows`` the tracks themselves keep the budget's row count from frame
to frame: the fresh queries, the carried tracks, then filler rows (no track id) that the head,
the tracker, the query interaction and the merge leave out (:func:`filler_rows`,
:func:`pad_tracks`), so the tracking's shapes are fixed too."""
from typing import Tuple

import torch
from torch import Tensor

from ..trackers import TrackInstances, build_empty_tracks, cat_tracks


def pad_queries(query: Tensor, ref_pts: Tensor, budget: int,
                num_fresh: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(Q, 2E) queries and (Q, 3) normalized reference points -> the same padded to
    ``budget`` rows (zero queries at the grid centre) and the (budget,) bool mask of the Q
    real rows. Raises RuntimeError when Q exceeds the budget (``num_fresh`` of the Q are fresh
    queries, the rest live tracks)."""
    num = len(query)
    if num > budget:
        raise RuntimeError(
            f'TrackOcc: {num} thing queries ({num_fresh} fresh + {num - num_fresh} live '
            f'tracks) exceed query_budget={budget}; raise model.query_budget (no track is '
            'dropped to fit the budget)')
    pad = budget - num
    query = torch.cat([query, query.new_zeros(pad, query.shape[1])])
    ref_pts = torch.cat([ref_pts, ref_pts.new_full((pad, 3), 0.5)])
    return query, ref_pts, torch.arange(budget, device=query.device) < num


def valid_rows(value, num: int):
    """The first ``num`` query rows of a (B, Q, ...) thing output or a list of them."""
    if isinstance(value, (list, tuple)):
        return [v[:, :num] for v in value]
    return value[:, :num]


def filler_rows(obj_idxes: Tensor, num_fresh: int) -> Tensor:
    """(Q,) bool: the rows of fixed-row tracks that are no track: after the ``num_fresh`` fresh
    queries, without a track id."""
    rows = torch.arange(len(obj_idxes), device=obj_idxes.device)
    return (rows >= num_fresh) & (obj_idxes < 0)


def pad_tracks(tracks: TrackInstances, budget: int) -> TrackInstances:
    """``tracks`` followed by filler rows up to ``budget`` rows: zero queries at the grid
    centre (reference point 0 in inverse-sigmoid space), no id, empty memory."""
    pad = budget - len(tracks)
    if pad < 0:
        raise RuntimeError(f'TrackOcc: {len(tracks)} track rows exceed query_budget={budget}')
    if pad == 0:
        return tracks
    filler = build_empty_tracks(tracks.query.new_zeros(pad, tracks.query.shape[1]),
                                tracks.ref_pts.new_zeros(pad, 3),
                                tracks.pred_logits.shape[1], tracks.pred_centers.shape[1],
                                tracks.mem_bank.shape[1])
    return cat_tracks(tracks, filler)
