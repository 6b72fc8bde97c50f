"""A fixed number of thing-query rows for the head at inference (``TrackOcc.query_budget``):
the fresh queries and live tracks padded to the budget, so the head's shapes are the same
every frame (and it can run as a CUDA graph); the padding rows' outputs are dropped."""
from typing import Tuple

import torch
from torch import Tensor


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
