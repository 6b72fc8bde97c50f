"""A Gaussian log-prior on thing masks around each query's predicted centre.

Not in the original TrackOcc (an ablation, docs/deviations.md): a thing query's mask logits
are a dot product with voxel features that carry little position, so in short trainings one
query's mask lights up several neighbouring objects of its class. Adding
``-0.5 * sum_a ((v_a - c_a) / sigma_a) ** 2`` (voxel centre ``v``, the query's metric centre
``c``, a per-query, per-axis ``sigma`` predicted from its decoder output) confines each mask
to the neighbourhood of the centre it regresses; the centre and the spread are learned through
the mask losses (and the centre also through the centre loss).

The penalty is bounded, ``-m * (1 - exp(-q / m))`` for ``q`` the quadratic above
(``0.5 * sum_a ((v_a - c_a) / sigma_a) ** 2``) and ``m = max_penalty``: near the centre it
is the Gaussian's, far away it levels off at ``-m``.
Unbounded, a gt object far from its query's centre costs ~q per positive voxel: in the
learning check the first iterations' mask BCE was 143 instead of 9, the gradient norm 4-40x
larger, and clipping it slowed every other loss (docs/benchmark.md, "a Gaussian prior
around each thing query's centre").

Learnt, the spread left the object scale in both H200 trainings (docs/benchmark.md, "the
centre prior bounded"): bounded, it shrank to ~0.28 m and nearly every voxel a kept query
claimed sat on the flat ``-m``, which its mask logits had learnt to offset; unbounded, it grew
to ~10 m. ``learn_sigma=False`` keeps every query's at ``init_sigma``.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackocc.registry import MODELS
from trackocc.structures.occ_grid import voxel_axes


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


@MODELS.register_module()
class MaskCenterPrior(nn.Module):
    """Per-query Gaussian log-prior over the voxel grid, added to thing mask logits.

    Args:
        embed_dims (int): E, size of the decoder outputs the spread is predicted from.
        occ_size (list[int]): grid (X, Y, Z).
        pc_range (list[float]): grid range in metres (x0, y0, z0, x1, y1, z1).
        init_sigma (list[float]): spread (metres, per axis) every query starts with (the
            spread branch's weights start at zero).
        min_sigma (float): lower bound of the spread in metres.
        max_penalty (float): m, the largest penalty (logit units); ``None``: unbounded.
        learn_sigma (bool): predict the spread per query (True) or keep every query's at
            ``init_sigma`` (False: no spread branch, only the centre moves the prior).

    Forward: decoder outputs (B, Q, E), metric centres (B, Q, 3) -> log-prior
    (B, Q, X, Y, Z) in float32, in (-m, 0].
    """

    def __init__(self, embed_dims: int, occ_size: Sequence[int], pc_range: Sequence[float],
                 init_sigma: Sequence[float] = (3.0, 3.0, 1.5), min_sigma: float = 0.2,
                 max_penalty: Optional[float] = 8.0, learn_sigma: bool = True) -> None:
        super().__init__()
        if len(init_sigma) != 3 or min(init_sigma) <= min_sigma or min_sigma <= 0:
            raise ValueError(f'MaskCenterPrior: init_sigma must be 3 spreads above min_sigma > 0, '
                             f'got {list(init_sigma)} and {min_sigma}')
        if len(occ_size) != 3 or len(pc_range) != 6:
            raise ValueError(f'MaskCenterPrior: occ_size must be (X, Y, Z) and pc_range 6 '
                             f'numbers, got {list(occ_size)} and {list(pc_range)}')
        if max_penalty is not None and max_penalty <= 0:
            raise ValueError(f'MaskCenterPrior: max_penalty must be > 0 or None, got '
                             f'{max_penalty}')
        self.max_penalty = None if max_penalty is None else float(max_penalty)
        self.occ_size = tuple(int(v) for v in occ_size)
        self.min_sigma = float(min_sigma)
        self._init_sigma = [float(s) for s in init_sigma]
        self.sigma_branch = nn.Linear(embed_dims, 3) if learn_sigma else None
        self.register_buffer('fixed_sigma', None if learn_sigma else
                             torch.tensor(self._init_sigma), persistent=False)
        # voxel centres per axis, metres: (X,), (Y,), (Z,)
        sizes = [(pc_range[a + 3] - pc_range[a]) / n for a, n in enumerate(self.occ_size)]
        for a, centres in enumerate(voxel_axes(self.occ_size, pc_range[:3], sizes)):
            self.register_buffer(f'voxel_centres_{a}', torch.from_numpy(centres).float(),
                                 persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        if self.sigma_branch is None:
            return
        nn.init.zeros_(self.sigma_branch.weight)
        with torch.no_grad():
            self.sigma_branch.bias.copy_(torch.tensor(
                [_inverse_softplus(s - self.min_sigma) for s in self._init_sigma]))

    def sigma(self, query: Tensor) -> Tensor:
        """(B, Q, E) decoder outputs -> (B, Q, 3) spreads in metres (float32)."""
        if self.sigma_branch is None:
            return self.fixed_sigma.float().expand(*query.shape[:2], 3)
        return F.softplus(self.sigma_branch(query).float()) + self.min_sigma

    def forward(self, query: Tensor, centers: Tensor) -> Tensor:
        sigma = self.sigma(query)
        centers = centers[..., :3].float()
        quad = None  # q = 0.5 * sum_a d_a ** 2, (B, Q, X, Y, Z)
        for a, n in enumerate(self.occ_size):
            view = [1, 1, 1]
            view[a] = n
            v = getattr(self, f'voxel_centres_{a}').float()
            d = (v - centers[..., a:a + 1]) / sigma[..., a:a + 1]  # (B, Q, n_a)
            term = (0.5 * d * d).view(*d.shape[:2], *view)
            quad = term if quad is None else quad + term
        if self.max_penalty is None:
            return -quad
        return torch.expm1(quad / -self.max_penalty) * self.max_penalty
