"""Streaming OccSTQ statistics of one sequence.

:class:`SequenceAccumulator` takes the frames of one sequence one at a time and keeps only
counts: the semantic confusion matrix and, keyed by ids, gt tube sizes, predicted track sizes
and gt-tube x track intersections. The counts are additive, so two accumulators of the same
sequence (frames seen by different processes) merge exactly. :meth:`SequenceAccumulator.close`
applies the per-sequence rules (min_points, id 1, which tracks count) and reduces the sequence
to a small :class:`SequenceStats`, which is what the final score is computed from.

numpy only (the offline tool imports this without torch / mmengine).
"""
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

import numpy as np

from .settings import OccSTQSettings

#: Same guard as the reference against division by zero.
EPS = 1e-15
#: Compact the per-frame count lists when they grow longer than this.
_COMPACT_EVERY = 32


def reduce_keys(keys: List[np.ndarray], counts: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Sum counts of equal int64 keys. Returns sorted unique keys and their counts."""
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = np.concatenate(keys)
    c = np.concatenate(counts)
    uniq, inv = np.unique(k, return_inverse=True)
    return uniq, np.bincount(inv.reshape(-1), weights=c, minlength=len(uniq)).astype(np.int64)


def reduce_pairs(first: np.ndarray, second: np.ndarray,
                  counts: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count (or sum ``counts`` of) equal (first, second) int64 pairs without overflow."""
    if len(first) == 0:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    u1, i1 = np.unique(first, return_inverse=True)
    u2, i2 = np.unique(second, return_inverse=True)
    combined = i1.reshape(-1).astype(np.int64) * len(u2) + i2.reshape(-1)
    uniq, inv = np.unique(combined, return_inverse=True)
    if counts is None:
        summed = np.bincount(inv.reshape(-1), minlength=len(uniq)).astype(np.int64)
    else:
        summed = np.bincount(inv.reshape(-1), weights=counts,
                             minlength=len(uniq)).astype(np.int64)
    return u1[uniq // len(u2)], u2[uniq % len(u2)], summed


@dataclass
class SequenceStats:
    """Closed statistics of one sequence (C = num_classes).

    confusion: (C, C) int64, rows = predicted class, columns = gt class (as the reference).
    aq_sum: (C,) float64, per class sum over gt tubes of the tube's association quality.
    num_tubes: (C,) int64, gt tubes per class that count.
    num_pred_tracks: predicted tracks (or per-class tracks in strict mode) that count.
    precision_sum / recall_sum / num_pairs: sums of |p∩g|/|p| and |p∩g|/|g| over the
        intersecting (track, tube) pairs, for the reference's auxiliary AQ_p / AQ_r.
    """

    sequence_id: int
    num_frames: int
    confusion: np.ndarray
    aq_sum: np.ndarray
    num_tubes: np.ndarray
    num_pred_tracks: int = 0
    precision_sum: float = 0.0
    recall_sum: float = 0.0
    num_pairs: int = 0


def evaluation_mask(mask_camera: Optional[np.ndarray], infov: Optional[np.ndarray],
                    settings: OccSTQSettings, shape: Tuple[int, ...]) -> np.ndarray:
    """Bool mask of the voxels to evaluate: ``mask_camera & infov`` as the settings ask
    (any nonzero value counts as set)."""
    parts = []
    for use, name, arr in ((settings.use_mask_camera, 'mask_camera', mask_camera),
                           (settings.use_infov, 'infov', infov)):
        if use:
            if arr is None:
                raise ValueError(f'evaluation_mask: use_{name} is set but {name} is missing')
            parts.append(np.asarray(arr).reshape(shape))
    if not parts:
        return np.ones(shape, dtype=bool)
    if len(parts) == 1:
        return parts[0].astype(bool)
    return np.logical_and(parts[0], parts[1])


@dataclass
class SequenceAccumulator:
    """Additive counts of one sequence; feed frames with :meth:`add_frame`."""

    sequence_id: int
    settings: OccSTQSettings = field(default_factory=OccSTQSettings)
    num_frames: int = 0
    frames_seen: Set[int] = field(default_factory=set)
    confusion: Optional[np.ndarray] = None
    # gt tubes: key = gt_id * C + gt_class
    _gt_keys: List[np.ndarray] = field(default_factory=list)
    _gt_counts: List[np.ndarray] = field(default_factory=list)
    # predicted tracks: key = pred_id (pooled) or pred_id * C + pred_class (per class)
    _pred_keys: List[np.ndarray] = field(default_factory=list)
    _pred_counts: List[np.ndarray] = field(default_factory=list)
    # intersections: (gt tube key, pred id)
    _pair_gt: List[np.ndarray] = field(default_factory=list)
    _pair_pred: List[np.ndarray] = field(default_factory=list)
    _pair_counts: List[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        c = self.settings.num_classes
        if self.confusion is None:
            self.confusion = np.zeros((c, c), dtype=np.int64)
        self._ignore_lut = np.zeros(c, dtype=bool)
        self._ignore_lut[list(self.settings.ignore_classes)] = True
        self._zero_inst_lut = np.zeros(c, dtype=bool)
        self._zero_inst_lut[list(self.settings.zero_instance_classes)] = True

    def __getstate__(self):
        self.compact()
        return {k: v for k, v in self.__dict__.items() if not k.endswith('_lut')}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()

    # ------------------------------------------------------------------ frames
    def add_frame(self, pred_sem: np.ndarray, pred_inst: np.ndarray, gt_sem: np.ndarray,
                  gt_inst: np.ndarray, mask: Optional[np.ndarray] = None,
                  frame_idx: Optional[int] = None, source: str = 'frame') -> None:
        """Add one frame. All arrays have the same number of voxels (any shape, e.g.
        (200, 200, 16) or flat (640000,)); ``mask`` is the bool evaluation mask (see
        :func:`evaluation_mask`), ``None`` = every voxel. ``source`` names the frame in errors.
        """
        c = self.settings.num_classes
        n = np.size(gt_sem)
        sized = [('pred semantics', pred_sem), ('pred instances', pred_inst),
                 ('gt instances', gt_inst)] + ([('mask', mask)] if mask is not None else [])
        for name, arr in sized:
            if np.size(arr) != n:
                raise ValueError(f'{source}: {name} has {np.size(arr)} voxels, gt semantics {n}')
        for name, arr in (('pred semantics', pred_sem), ('pred instances', pred_inst),
                          ('gt semantics', gt_sem), ('gt instances', gt_inst)):
            if not np.issubdtype(np.asarray(arr).dtype, np.integer):
                raise ValueError(f'{source}: {name} must be an integer array, got '
                                 f'{np.asarray(arr).dtype}')
        if frame_idx is not None:
            if frame_idx in self.frames_seen:
                raise ValueError(f'{source}: frame {frame_idx} of sequence {self.sequence_id} '
                                 f'was already added')
            self.frames_seen.add(int(frame_idx))
        ps, pi, gs, gi = (np.asarray(a).reshape(-1) for a in (pred_sem, pred_inst, gt_sem, gt_inst))
        m = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
        in_range = []  # per array: every voxel (evaluated or not) holds a class id
        for name, arr in (('pred semantics', ps), ('gt semantics', gs)):
            if arr.size and ((np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0)
                             or arr.max() >= c):
                inside = arr if m is None else arr[m]  # only evaluated voxels must be valid
                if inside.size and (inside.min() < 0 or inside.max() >= c):
                    raise ValueError(f'{source}: {name} has class ids outside [0, {c}) '
                                     f'(min {inside.min()}, max {inside.max()}) in evaluated '
                                     f'voxels')
                in_range.append(False)
            else:
                in_range.append(True)
        if c <= 16:  # wider ids (the loader's int64) that fit: the uint8 path below
            ps, gs = (a.astype(np.uint8) if ok and a.dtype != np.uint8 else a
                      for a, ok in zip((ps, gs), in_range))
        # confusion (rows = predicted class, columns = gt class)
        if c <= 16 and ps.dtype == np.uint8 and gs.dtype == np.uint8:
            # one uint8 key per voxel, pred << 4 | gt, counted over the evaluated voxels
            # (bincount widens its input to int64: the fewer voxels, the cheaper)
            key = (ps << 4) | gs
            counts = np.bincount(key if m is None else key[m], minlength=256)
            self.confusion += counts.reshape(16, 16)[:c, :c]
        else:
            ps_m = ps if m is None else ps[m]
            gs_m = gs if m is None else gs[m]
            code_dtype = np.uint16 if c * c <= np.iinfo(np.uint16).max else np.int64
            code = ps_m.astype(code_dtype) * code_dtype(c) + gs_m.astype(code_dtype)
            self.confusion += np.bincount(code, minlength=c * c).reshape(c, c)
        self.num_frames += 1

        # panoptic counting only needs voxels with a gt or a predicted instance id, where the
        # gt class is not ignored: select them first (a few percent of the grid)
        has_inst = (gi > 0) | (pi > 0)
        if m is not None:
            has_inst &= m
        idx = np.flatnonzero(has_inst)
        gs = gs[idx].astype(np.int64)
        keep = ~self._ignore_lut[gs]
        idx, gs = idx[keep], gs[keep]
        ps = ps[idx].astype(np.int64)
        gi = gi[idx].astype(np.int64)
        pi = pi[idx].astype(np.int64)
        if self._zero_inst_lut.any():
            gi[self._zero_inst_lut[gs]] = 0
            if self.settings.zero_instances_in_pred:
                pi[self._zero_inst_lut[ps]] = 0

        gt_sel = gi > 0
        gt_key = gi[gt_sel] * c + gs[gt_sel]
        if gt_key.size:
            k, cnt = np.unique(gt_key, return_counts=True)
            self._gt_keys.append(k)
            self._gt_counts.append(cnt.astype(np.int64))

        pred_sel = (pi > 0) & ~self._ignore_lut[ps]
        if self.settings.pred_size_pooled_over_classes:
            pred_key = pi[pred_sel]
        else:
            pred_key = pi[pred_sel] * c + ps[pred_sel]
        if pred_key.size:
            k, cnt = np.unique(pred_key, return_counts=True)
            self._pred_keys.append(k)
            self._pred_counts.append(cnt.astype(np.int64))

        pair_sel = gt_sel & (pi > 0)
        if not self.settings.intersection_ignores_pred_class:
            pair_sel &= ps == gs
        if pair_sel.any():
            g, p, cnt = reduce_pairs(gi[pair_sel] * c + gs[pair_sel], pi[pair_sel])
            self._pair_gt.append(g)
            self._pair_pred.append(p)
            self._pair_counts.append(cnt)
        if len(self._pair_counts) > _COMPACT_EVERY or len(self._gt_keys) > _COMPACT_EVERY:
            self.compact()

    # ------------------------------------------------------------------ merging
    def compact(self) -> None:
        """Reduce the per-frame count lists to one entry each (no change in meaning)."""
        if len(self._gt_keys) > 1:
            k, cnt = reduce_keys(self._gt_keys, self._gt_counts)
            self._gt_keys, self._gt_counts = [k], [cnt]
        if len(self._pred_keys) > 1:
            k, cnt = reduce_keys(self._pred_keys, self._pred_counts)
            self._pred_keys, self._pred_counts = [k], [cnt]
        if len(self._pair_gt) > 1:
            g, p, cnt = reduce_pairs(np.concatenate(self._pair_gt),
                                      np.concatenate(self._pair_pred),
                                      np.concatenate(self._pair_counts))
            self._pair_gt, self._pair_pred, self._pair_counts = [g], [p], [cnt]

    def merge(self, other: 'SequenceAccumulator') -> 'SequenceAccumulator':
        """Add ``other``'s counts (same sequence, same settings, disjoint frames) in place."""
        if other.sequence_id != self.sequence_id:
            raise ValueError(f'cannot merge sequence {other.sequence_id} into {self.sequence_id}')
        if other.settings != self.settings:
            raise ValueError(f'sequence {self.sequence_id}: cannot merge accumulators built '
                             f'with different settings')
        dup = self.frames_seen & other.frames_seen
        if dup:
            raise ValueError(f'sequence {self.sequence_id}: frames {sorted(dup)[:10]} were '
                             f'added twice (in two partial states)')
        self.frames_seen |= other.frames_seen
        self.num_frames += other.num_frames
        self.confusion = self.confusion + other.confusion
        self._gt_keys += other._gt_keys
        self._gt_counts += other._gt_counts
        self._pred_keys += other._pred_keys
        self._pred_counts += other._pred_counts
        self._pair_gt += other._pair_gt
        self._pair_pred += other._pair_pred
        self._pair_counts += other._pair_counts
        self.compact()
        return self

    # ------------------------------------------------------------------ closing
    def close(self) -> SequenceStats:
        """Apply the per-sequence rules and reduce to :class:`SequenceStats`."""
        s = self.settings
        c = s.num_classes
        gt_keys, gt_counts = reduce_keys(self._gt_keys, self._gt_counts)
        pred_keys, pred_counts = reduce_keys(self._pred_keys, self._pred_counts)
        pair_gt, pair_pred, pair_counts = reduce_pairs(
            np.concatenate(self._pair_gt) if self._pair_gt else np.zeros(0, np.int64),
            np.concatenate(self._pair_pred) if self._pair_pred else np.zeros(0, np.int64),
            np.concatenate(self._pair_counts) if self._pair_counts else None)

        # gt tubes that count
        tube_ok = gt_counts > s.min_points
        if s.skip_instance_id_one:
            tube_ok &= (gt_keys // c) != 1
        # predicted tracks that count
        pred_ids = pred_keys if s.pred_size_pooled_over_classes else pred_keys // c
        track_ok = np.ones(len(pred_keys), dtype=bool)
        if s.skip_instance_id_one:
            track_ok &= pred_ids != 1
        pred_keys, pred_counts = pred_keys[track_ok], pred_counts[track_ok]
        tube_keys, tube_sizes = gt_keys[tube_ok], gt_counts[tube_ok]
        tube_cls = tube_keys % c

        # intersections of counted tubes with counted tracks
        t_idx = np.searchsorted(tube_keys, pair_gt)
        t_found = t_idx < len(tube_keys)
        t_found[t_found] = tube_keys[t_idx[t_found]] == pair_gt[t_found]
        track_key = pair_pred if s.pred_size_pooled_over_classes else pair_pred * c + pair_gt % c
        p_idx = np.searchsorted(pred_keys, track_key)
        p_found = p_idx < len(pred_keys)
        p_found[p_found] = pred_keys[p_idx[p_found]] == track_key[p_found]
        ok = t_found & p_found
        t_idx, p_idx, inter = t_idx[ok], p_idx[ok], pair_counts[ok]
        g_size, p_size = tube_sizes[t_idx], pred_counts[p_idx]

        # association quality of tube g: 1/|g| * sum_p |p∩g| * IoU(p, g)
        terms = inter * (inter / (g_size + p_size - inter))
        inner = np.bincount(t_idx, weights=terms, minlength=len(tube_keys))
        tube_aq = (1.0 / tube_sizes) * inner
        return SequenceStats(
            sequence_id=int(self.sequence_id),
            num_frames=int(self.num_frames),
            confusion=self.confusion.copy(),
            aq_sum=np.bincount(tube_cls, weights=tube_aq, minlength=c).astype(np.float64),
            num_tubes=np.bincount(tube_cls, minlength=c).astype(np.int64),
            num_pred_tracks=int(len(pred_keys)),
            precision_sum=float(np.sum(inter / p_size)),
            recall_sum=float(np.sum(inter / g_size)),
            num_pairs=int(len(inter)))
