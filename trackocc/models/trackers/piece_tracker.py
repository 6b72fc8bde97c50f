"""Test-time piece tracking (an ablation, not in the original TrackOcc).

A thing query's mask often covers several objects at once (docs/benchmark.md, "what AQ waits
for, by oracle"): the pieces of a merged instance that do not touch are, most of the time,
different objects. :class:`PieceTracker` cuts every merged instance into its connected pieces
and gives each piece an id that follows it from frame to frame by its centroid in the world
frame. Host-side (scipy), after the panoptic merge.
"""
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from trackocc.registry import MODELS

#: connected-piece neighbourhoods: faces (6) or faces, edges and corners (26)
PIECE_CONNECTIVITY = {6: ndimage.generate_binary_structure(3, 1),
                      26: ndimage.generate_binary_structure(3, 3)}
#: largest id a saved prediction holds (``pano_inst`` is int16)
MAX_INSTANCE_ID = int(np.iinfo(np.int16).max)


class Piece(NamedTuple):
    """One connected piece of a merged instance."""
    parent: int          # the merged instance's id (track id + 1)
    voxels: tuple        # np.nonzero-style index arrays into the (X, Y, Z) grid
    size: int            # voxels
    centroid: np.ndarray  # (3,) metres, world frame


@MODELS.register_module()
class PieceTracker:
    """Cut merged instances into connected pieces and track the pieces.

    Per frame: the voxels of each instance (``cut='instance'``), or the instance voxels of
    each class (``cut='class'``: touching masks of two tracks join; a piece's track is the one
    most of its voxels hold), are labelled into ``connectivity``-connected pieces; a piece of
    at least ``min_voxels`` voxels (or the largest piece of its region) is kept, the other
    pieces lose their instance id (their class stays). The kept pieces are matched to
    the previous frame's pieces by world-frame centroid distance (Hungarian, at most
    ``max_distance`` metres; only pieces of the same track unless ``match_across_tracks``):
    a matched piece keeps its previous id. Unmatched pieces, largest first, take their
    track's id while no piece of the frame holds it, else a fresh id counted from
    ``first_piece_id`` within the sequence.

    Args:
        occ_size (Sequence[int]): grid (X, Y, Z).
        pc_range (Sequence[float]): grid bounds (x0, y0, z0, x1, y1, z1), ego frame, metres.
        connectivity (int): 6 or 26.
        min_voxels (int): smallest piece that becomes an instance of its own.
        max_distance (float): metres a piece's centroid may move between frames.
        match_across_tracks (bool): a piece may take the id of another track's piece.
        first_piece_id (int): first fresh id; the merge's ids must stay below it.
        cut (str): 'instance' or 'class' (above).
    """

    def __init__(self, occ_size: Sequence[int], pc_range: Sequence[float],
                 connectivity: int = 26, min_voxels: int = 8, max_distance: float = 2.0,
                 match_across_tracks: bool = False, first_piece_id: int = 16384,
                 cut: str = 'instance') -> None:
        if cut not in ('instance', 'class'):
            raise ValueError(f"PieceTracker: cut must be 'instance' or 'class', got {cut!r}")
        self.cut = cut
        if connectivity not in PIECE_CONNECTIVITY:
            raise ValueError(f'PieceTracker: connectivity must be one of '
                             f'{tuple(PIECE_CONNECTIVITY)}, got {connectivity!r}')
        if min_voxels < 1 or max_distance < 0:
            raise ValueError(f'PieceTracker: min_voxels must be >= 1 and max_distance >= 0, '
                             f'got {min_voxels} and {max_distance}')
        if not 0 < first_piece_id <= MAX_INSTANCE_ID:
            raise ValueError(f'PieceTracker: first_piece_id must be in [1, {MAX_INSTANCE_ID}]'
                             f', got {first_piece_id}')
        self.occ_size = tuple(int(s) for s in occ_size)
        lower, upper = np.asarray(pc_range[:3], float), np.asarray(pc_range[3:], float)
        self.voxel_size = (upper - lower) / np.asarray(self.occ_size)
        self.grid_origin = lower + 0.5 * self.voxel_size  # centre of voxel (0, 0, 0)
        self.structure = PIECE_CONNECTIVITY[connectivity]
        self.min_voxels = min_voxels
        self.max_distance = float(max_distance)
        self.match_across_tracks = match_across_tracks
        self.first_piece_id = first_piece_id
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame's pieces (a new sequence)."""
        self.previous: List[Piece] = []
        self.previous_ids: List[int] = []
        self.next_id = self.first_piece_id

    def __call__(self, instances: Tensor, ego2global, semantics: Optional[Tensor] = None,
                 new_sequence: bool = False) -> Tensor:
        """Instance ids (N,) of a frame (0 = none) -> piece ids (N,), same dtype and device.

        ``ego2global`` (4, 4): the frame's ego pose (grid frame -> world); ``semantics``
        (N,): the frame's classes (needed when ``cut='class'``); ``new_sequence``: forget
        the previous frame first."""
        if new_sequence:
            self.reset()
        grid = instances.detach().cpu().numpy().reshape(self.occ_size)
        if self.cut == 'class':
            if semantics is None:
                raise ValueError("PieceTracker(cut='class') needs the frame's semantics")
            sem = semantics.detach().cpu().numpy().reshape(self.occ_size).astype(np.int64)
            cut = np.where(grid > 0, sem + 1, 0)
        else:
            cut = grid
        if grid.size and grid.max() >= self.first_piece_id:
            raise ValueError(f'PieceTracker: instance id {int(grid.max())} >= first_piece_id '
                             f'({self.first_piece_id}); raise first_piece_id')
        pieces = self._pieces(grid, cut, np.asarray(ego2global, dtype=np.float64).reshape(4, 4))
        ids = self._assign_ids(pieces)
        out = np.zeros_like(grid)
        for piece, ident in zip(pieces, ids):
            out[piece.voxels] = ident
        self.previous, self.previous_ids = pieces, ids
        return torch.from_numpy(out.reshape(-1)).to(instances.device)

    def _pieces(self, grid: np.ndarray, cut: np.ndarray, ego2global: np.ndarray
                ) -> List[Piece]:
        """The kept pieces of every region of ``cut`` (an instance, or the instance voxels
        of a class + 1), regions in order, pieces largest first."""
        pieces = []
        for region, box in enumerate(ndimage.find_objects(np.maximum(cut, 0)), start=1):
            if box is None:
                continue
            labels, count = ndimage.label(cut[box] == region, structure=self.structure)
            sizes = np.bincount(labels.ravel())[1:]
            piece_boxes = ndimage.find_objects(labels)  # each piece's crop of the region's
            for order, k in enumerate(np.argsort(-sizes, kind='stable')):
                if order > 0 and sizes[k] < self.min_voxels:
                    break
                sub = piece_boxes[k]
                local = np.nonzero(labels[sub] == k + 1)
                voxels = tuple(ax + outer.start + inner.start
                               for ax, outer, inner in zip(local, box, sub))
                parent = int(np.bincount(grid[voxels]).argmax())  # the id most voxels hold
                centre = self.grid_origin + np.mean(voxels, axis=1) * self.voxel_size
                world = ego2global[:3, :3] @ centre + ego2global[:3, 3]
                pieces.append(Piece(parent, voxels, int(sizes[k]), world))
        return pieces

    def _assign_ids(self, pieces: List[Piece]) -> List[int]:
        """One id per piece: the matched previous piece's, else its track's or a fresh one."""
        ids: List[Optional[int]] = [None] * len(pieces)
        if pieces and self.previous:
            now = np.stack([p.centroid for p in pieces])
            before = np.stack([p.centroid for p in self.previous])
            cost = np.linalg.norm(now[:, None] - before[None], axis=-1)  # (P, P')
            if not self.match_across_tracks:
                same = np.array([p.parent for p in pieces])[:, None] == \
                    np.array([p.parent for p in self.previous])[None]
                cost = np.where(same, cost, np.inf)
            feasible = cost <= self.max_distance
            rows, cols = linear_sum_assignment(np.where(feasible, cost, 1e9))
            for r, c in zip(rows, cols):
                if feasible[r, c]:
                    ids[r] = self.previous_ids[c]
        taken = {i for i in ids if i is not None}
        for r in sorted(range(len(pieces)), key=lambda r: -pieces[r].size):
            if ids[r] is not None:
                continue
            if pieces[r].parent not in taken:
                ids[r] = pieces[r].parent
            else:
                if self.next_id > MAX_INSTANCE_ID:
                    raise ValueError(f'PieceTracker: more than '
                                     f'{MAX_INSTANCE_ID - self.first_piece_id + 1} fresh piece '
                                     f'ids in one sequence; raise min_voxels')
                ids[r] = self.next_id
                self.next_id += 1
            taken.add(ids[r])
        return ids
