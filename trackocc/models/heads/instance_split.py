"""Test-time split of merged instances along the predicted occupancy (an ablation, not in the
original TrackOcc).

A thing query's mask can cover several nearby objects and the free space between them (the
track diagnostics' ``purity`` / ``gt/trk``). Where the semantic head calls those gaps free,
the instance's occupied voxels fall apart into connected pieces: the instance keeps its largest
occupied piece (and its voxels the semantic head calls free, which hold no object); its other
occupied pieces lose the instance id (their class stays). Host-side (scipy), one crop per
instance.
"""
from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from ..trackers.piece_tracker import PIECE_CONNECTIVITY

#: neighbourhoods of :func:`keep_largest_occupied_piece`: faces (6) or faces, edges and corners
SPLIT_CONNECTIVITY = PIECE_CONNECTIVITY


def checked_connectivity(connectivity: Optional[int]) -> Optional[int]:
    """``connectivity`` if it is None or one of :data:`SPLIT_CONNECTIVITY`, else ValueError."""
    if connectivity not in (None, *SPLIT_CONNECTIVITY):
        raise ValueError(f'TrackOcc: instance_split_connectivity must be None or one of '
                         f'{tuple(SPLIT_CONNECTIVITY)}, got {connectivity!r}')
    return connectivity


def keep_largest_occupied_piece(instances: Tensor, occupied: Tensor,
                                connectivity: int = 26) -> Tensor:
    """Instance ids (X, Y, Z) where each instance keeps only its largest connected piece of
    ``occupied`` voxels (ties: the piece met first in C order) and its unoccupied voxels.

    Args:
        instances: (X, Y, Z) integer instance ids, 0 = none.
        occupied: (X, Y, Z) bool, e.g. the semantic head's argmax is not free.
        connectivity: 6 or 26.

    Returns:
        a new (X, Y, Z) tensor of ``instances``' dtype and device.
    """
    if instances.dim() != 3 or occupied.shape != instances.shape:
        raise ValueError(f'keep_largest_occupied_piece: instances {tuple(instances.shape)} and '
                         f'occupied {tuple(occupied.shape)} must be one (X, Y, Z) shape')
    if connectivity not in SPLIT_CONNECTIVITY:
        raise ValueError(f'keep_largest_occupied_piece: connectivity must be 6 or 26, got '
                         f'{connectivity}')
    inst = instances.detach().cpu().numpy().copy()
    occ = occupied.detach().cpu().numpy().astype(bool)
    structure = SPLIT_CONNECTIVITY[connectivity]
    positive = np.where(inst > 0, inst, 0)
    for ident, box in enumerate(ndimage.find_objects(positive), start=1):
        if box is None:
            continue
        mine = inst[box] == ident
        labels, count = ndimage.label(mine & occ[box], structure=structure)
        if count < 2:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        drop = (labels > 0) & (labels != int(sizes.argmax()) + 1)
        inst[box][drop] = 0
    return torch.from_numpy(inst).to(instances.device)


def split_on_predicted_occupancy(instances: Tensor, sem_logits: Optional[Tensor],
                                 occ_size: Sequence[int], free_class: int,
                                 connectivity: int = 26) -> Tensor:
    """(N,) merged instance ids, each instance cut by :func:`keep_largest_occupied_piece` to
    the voxels whose semantic argmax (``sem_logits`` (1, C, X, Y, Z)) is not ``free_class``."""
    if sem_logits is None:
        raise ValueError('instance split: needs the semantic branch\'s logits '
                         '(pts_bbox_head.sem_hidden_channels > 0)')
    occupied = sem_logits[0].argmax(0) != free_class  # (X, Y, Z)
    return keep_largest_occupied_piece(instances.view(*occ_size), occupied,
                                       connectivity).view(-1)
