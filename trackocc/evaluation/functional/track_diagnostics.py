"""Track diagnostics of 4D panoptic occupancy predictions: the numbers behind a low AQ.

Gt tubes and predicted tracks are the ones OccSTQ counts (same evaluation mask, ignored
classes, ``min_points``, instance id 1, pooled or per-class tracks: :class:`OccSTQSettings`).
In every frame the gt instances (a tube's voxels in that frame) and the predicted instances are
matched one to one by voxel IoU: a pair matches when its IoU in that frame is above
``iou_thr`` (0.5: at most one partner each, as in panoptic quality); the intersection follows
``intersection_ignores_pred_class`` as the AQ does. From the matches, per tube: matched
frames, ID switches (the matched track differs from the one matched last time), fragmentations
(a matched run that resumes after an unmatched frame of the tube), mostly tracked (matched in
>= 80 % of its frames) / mostly lost (< 20 %); per track: birth and death frame, lifetime,
false positive (never matched). Over the whole sequence: the share of a tube's voxels held by
its majority track (``coverage``, the track with the largest intersection) and the tube's AQ
term ``1/|g| sum_p |p & g| IoU(p, g)`` (the per-class mean is the OccSTQ AQ of that class).
The converse, per track: ``purity``, the share of its voxels that lie, frame by frame, in the
one gt instance it overlaps most in that frame, and the number of gt instances it touches per
frame (``tubes_per_frame``): a track that spans several objects (under-segmentation) has low
purity and touches more than one; its voxels on gt stuff classes lower its purity too.

A track's class is its most frequent predicted class (per-class tracks: their class).
Lifetimes count evaluated frames from the first to the last one holding the tube / track.

numpy only.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# the package's public names (the npz reader and the layout checks may move behind them)
from . import (GRID_SHAPE, OccSTQSettings, evaluation_mask, load_gt_frame, load_pred_frame,
               plan_frames, summarize)
from .sequence_accumulator import SequenceAccumulator, reduce_keys, reduce_pairs

#: A tube is mostly tracked when matched in at least this share of its frames ...
MOSTLY_TRACKED = 0.8
#: ... and mostly lost when matched in less than this share.
MOSTLY_LOST = 0.2


class _FrameCounts:
    """Voxel counts of one frame (keys as int64 arrays)."""

    __slots__ = ('frame', 'gt_keys', 'gt_sizes', 'track_keys', 'track_sizes', 'pair_gt',
                 'pair_track', 'pair_sizes', 'class_track', 'class_id', 'class_sizes')

    def __init__(self, frame: int, **arrays):
        self.frame = frame
        for name, value in arrays.items():
            setattr(self, name, value)


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def _median(values: Sequence[float]) -> Optional[float]:
    return float(np.median(values)) if len(values) else None


def _ratio(num: float, den: float) -> Optional[float]:
    return float(num) / float(den) if den else None


class TrackDiagnostics:
    """Frame-by-frame tube / track bookkeeping of one sequence; feed frames with
    :meth:`add_frame`, then :meth:`close` returns the sequence report (a dict).

    The frames also go through a :class:`SequenceAccumulator` (same input checks, and the
    sequence's OccSTQ statistics as :attr:`occstq_stats` after closing).
    """

    def __init__(self, sequence_id: int, settings: Optional[OccSTQSettings] = None,
                 iou_thr: float = 0.5):
        if not 0.0 <= iou_thr < 1.0:
            raise ValueError(f'TrackDiagnostics: iou_thr must be in [0, 1), got {iou_thr}')
        self.sequence_id = int(sequence_id)
        self.settings = settings or OccSTQSettings()
        self.iou_thr = float(iou_thr)
        self._acc = SequenceAccumulator(self.sequence_id, self.settings)
        self._frames: List[_FrameCounts] = []
        self.occstq_stats = None
        c = self.settings.num_classes
        self._ignore_lut = np.zeros(c, dtype=bool)
        self._ignore_lut[list(self.settings.ignore_classes)] = True
        self._zero_inst_lut = np.zeros(c, dtype=bool)
        self._zero_inst_lut[list(self.settings.zero_instance_classes)] = True

    # ------------------------------------------------------------------ frames
    def add_frame(self, pred_sem: np.ndarray, pred_inst: np.ndarray, gt_sem: np.ndarray,
                  gt_inst: np.ndarray, mask: Optional[np.ndarray] = None,
                  frame_idx: Optional[int] = None, source: str = 'frame') -> None:
        """Add one frame (arrays of any shape with the same number of voxels; ``mask``: bool
        evaluation mask or ``None``; frames in time order). Same checks as
        :meth:`SequenceAccumulator.add_frame`."""
        frame_idx = len(self._frames) if frame_idx is None else int(frame_idx)
        if self._frames and frame_idx <= self._frames[-1].frame:
            raise ValueError(f'{source}: frame {frame_idx} of sequence {self.sequence_id} '
                             f'comes after frame {self._frames[-1].frame}; add frames in '
                             f'time order, each once')
        self._acc.add_frame(pred_sem, pred_inst, gt_sem, gt_inst, mask, frame_idx=frame_idx,
                            source=source)
        s, c = self.settings, self.settings.num_classes
        ps, pi, gs, gi = (np.asarray(a).reshape(-1) for a in (pred_sem, pred_inst, gt_sem,
                                                              gt_inst))
        # the voxels OccSTQ counts instances on: evaluated, gt class not ignored
        sel = (gi > 0) | (pi > 0)
        if mask is not None:
            sel &= np.asarray(mask, dtype=bool).reshape(-1)
        idx = np.flatnonzero(sel)
        gs = gs[idx].astype(np.int64)
        keep = ~self._ignore_lut[gs]
        idx, gs = idx[keep], gs[keep]
        ps, gi, pi = (a[idx].astype(np.int64) for a in (ps, gi, pi))
        if self._zero_inst_lut.any():
            gi[self._zero_inst_lut[gs]] = 0
            if s.zero_instances_in_pred:
                pi[self._zero_inst_lut[ps]] = 0

        gt_sel = gi > 0
        gt_keys, gt_sizes = np.unique(gi[gt_sel] * c + gs[gt_sel], return_counts=True)
        pred_sel = (pi > 0) & ~self._ignore_lut[ps]
        pooled = s.pred_size_pooled_over_classes
        track = pi[pred_sel] if pooled else pi[pred_sel] * c + ps[pred_sel]
        track_keys, track_sizes = np.unique(track, return_counts=True)
        class_track, class_id, class_sizes = reduce_pairs(track, ps[pred_sel])
        pair_sel = gt_sel & (pi > 0)
        if not s.intersection_ignores_pred_class:
            pair_sel &= ps == gs
        pair_track = pi[pair_sel] if pooled else pi[pair_sel] * c + gs[pair_sel]
        pair_gt, pair_track, pair_sizes = reduce_pairs(gi[pair_sel] * c + gs[pair_sel],
                                                        pair_track)
        self._frames.append(_FrameCounts(
            frame_idx, gt_keys=gt_keys, gt_sizes=gt_sizes.astype(np.int64),
            track_keys=track_keys, track_sizes=track_sizes.astype(np.int64),
            pair_gt=pair_gt, pair_track=pair_track, pair_sizes=pair_sizes,
            class_track=class_track, class_id=class_id, class_sizes=class_sizes))

    # ------------------------------------------------------------------ closing
    def _counted(self) -> Tuple[Dict[int, int], Dict[int, int], Dict[int, int]]:
        """Counted tubes {key: voxels}, counted tracks {key: voxels}, track class {key: cls}."""
        s, c = self.settings, self.settings.num_classes
        frames = self._frames
        gk, gn = reduce_keys([f.gt_keys for f in frames], [f.gt_sizes for f in frames])
        ok = gn > s.min_points
        if s.skip_instance_id_one:
            ok &= gk // c != 1
        tubes = dict(zip(gk[ok].tolist(), gn[ok].tolist()))
        tk, tn = reduce_keys([f.track_keys for f in frames], [f.track_sizes for f in frames])
        ids = tk if s.pred_size_pooled_over_classes else tk // c
        ok = ids != 1 if s.skip_instance_id_one else np.ones(len(tk), dtype=bool)
        tracks = dict(zip(tk[ok].tolist(), tn[ok].tolist()))
        if s.pred_size_pooled_over_classes:
            ct, cc, cn = reduce_pairs(*(np.concatenate([getattr(f, k) for f in frames])
                                         for k in ('class_track', 'class_id', 'class_sizes')))
            order = np.lexsort((cc, -cn, ct))  # per track: most voxels, then lowest class
            track_class: Dict[int, int] = {}
            for t, cl in zip(ct[order].tolist(), cc[order].tolist()):
                track_class.setdefault(t, cl)
        else:
            track_class = {t: t % c for t in tracks}
        return tubes, tracks, track_class

    def close(self) -> dict:
        """The sequence report: ``sequence_id``, ``frames``, ``tubes`` and ``tracks`` (one
        record each), ``per_frame`` (counts per frame), ``per_class`` and ``overall``
        (:func:`summarize_records`)."""
        if not self._frames:
            raise ValueError(f'sequence {self.sequence_id}: no frame was added')
        s, c = self.settings, self.settings.num_classes
        pooled = s.pred_size_pooled_over_classes
        self.occstq_stats = self._acc.close()
        tubes, tracks, track_class = self._counted()
        num = len(self._frames)
        frames = [f.frame for f in self._frames]
        tube_hist: Dict[int, List[Tuple[int, Optional[int]]]] = {k: [] for k in tubes}
        track_pos: Dict[int, List[int]] = {k: [] for k in tracks}
        track_matches: Dict[int, List[int]] = {k: [] for k in tracks}
        track_pure: Dict[int, int] = {k: 0 for k in tracks}  # voxels in its best tube per frame
        track_touch: Dict[int, int] = {k: 0 for k in tracks}  # tubes touched, summed over frames
        inter: Dict[Tuple[int, int], int] = {}
        per_frame = {k: [0] * num for k in ('gt_instances', 'pred_instances', 'matched')}
        for pos, fc in enumerate(self._frames):
            g_here = {g: n for g, n in zip(fc.gt_keys.tolist(), fc.gt_sizes.tolist())
                      if g in tubes}
            p_here = {p: n for p, n in zip(fc.track_keys.tolist(), fc.track_sizes.tolist())
                      if p in tracks}
            candidates = []
            best_here: Dict[int, int] = {}
            for g, p, n in zip(fc.pair_gt.tolist(), fc.pair_track.tolist(),
                               fc.pair_sizes.tolist()):
                if g not in tubes or p not in tracks:
                    continue
                inter[(g, p)] = inter.get((g, p), 0) + n
                best_here[p] = max(best_here.get(p, 0), n)
                track_touch[p] += 1
                if g in g_here and p in p_here:
                    iou = n / (g_here[g] + p_here[p] - n)
                    if iou > self.iou_thr:
                        candidates.append((-iou, g, p))
            match: Dict[int, int] = {}
            taken = set()
            for _, g, p in sorted(candidates):  # best IoU first, then keys: deterministic
                if g not in match and p not in taken:
                    match[g] = p
                    taken.add(p)
            for g in g_here:
                tube_hist[g].append((pos, match.get(g)))
            for p in p_here:
                track_pos[p].append(pos)
                track_pure[p] += best_here.get(p, 0)
            for g, p in match.items():
                track_matches[p].append(g)
            per_frame['gt_instances'][pos] = len(g_here)
            per_frame['pred_instances'][pos] = len(p_here)
            per_frame['matched'][pos] = len(match)

        def track_id(key: int) -> int:
            return key if pooled else key // c

        tube_records = []
        for g, size in sorted(tubes.items(), key=lambda kv: (kv[0] % c, kv[0] // c)):
            hist = tube_hist[g]
            matched = [p for _, p in hist if p is not None]
            switches = sum(1 for a, b in zip(matched, matched[1:]) if a != b)
            runs = sum(1 for i, (_, p) in enumerate(hist)
                       if p is not None and (i == 0 or hist[i - 1][1] is None))
            overlaps = {p: n for (gg, p), n in inter.items() if gg == g}
            aq = sum(n * n / (size + tracks[p] - n) for p, n in overlaps.items()) / size
            major = min(overlaps, key=lambda p: (-overlaps[p], p)) if overlaps else None
            first, last = hist[0][0], hist[-1][0]
            tube_records.append(dict(
                id=g // c, class_id=g % c, voxels=size, first_frame=frames[first],
                last_frame=frames[last], frames=len(hist), lifetime=last - first + 1,
                born_late=first > 0, ended_early=last < num - 1,
                matched_frames=len(matched), id_switches=switches,
                fragmentations=max(runs - 1, 0),
                matched_tracks=sorted({track_id(p) for p in matched}),
                majority_track=None if major is None else track_id(major),
                coverage=0.0 if major is None else overlaps[major] / size, aq=aq))
        track_records = []
        for p, size in sorted(tracks.items(), key=lambda kv: (track_class[kv[0]], kv[0])):
            pos = track_pos[p]
            first, last = pos[0], pos[-1]
            track_records.append(dict(
                id=track_id(p), class_id=track_class[p], voxels=size,
                first_frame=frames[first], last_frame=frames[last], frames=len(pos),
                lifetime=last - first + 1, born_late=first > 0, ended_early=last < num - 1,
                matched_frames=len(track_matches[p]),
                matched_tubes=sorted({g // c for g in track_matches[p]}),
                false_positive=not track_matches[p], purity=track_pure[p] / size,
                tubes_per_frame=track_touch[p] / len(pos)))
        for key, records, field in (('births', track_records, 'first_frame'),
                                    ('deaths', track_records, 'last_frame'),
                                    ('gt_births', tube_records, 'first_frame'),
                                    ('gt_deaths', tube_records, 'last_frame')):
            counts = [0] * num
            for r in records:
                pos = frames.index(r[field])
                if key.endswith('births') or pos < num - 1:  # alive at the end: no death
                    counts[pos] += 1
            per_frame[key] = counts
        report = dict(sequence_id=self.sequence_id, num_frames=num, frames=frames,
                      per_frame=per_frame, tubes=tube_records, tracks=track_records)
        report.update(summarize_records([report], s))
        return report


def summarize_class(tubes: Sequence[dict], tracks: Sequence[dict], transitions: int) -> dict:
    """Totals of tube and track records (of one class or all); ``transitions`` = sum over
    sequences of (frames - 1), the denominator of births / deaths per frame."""
    t_frames = sum(t['frames'] for t in tubes)
    t_matched = sum(t['matched_frames'] for t in tubes)
    p_frames = sum(p['frames'] for p in tracks)
    voxels = sum(t['voxels'] for t in tubes)
    return dict(
        gt_tubes=len(tubes), pred_tracks=len(tracks),
        matched_tubes=sum(1 for t in tubes if t['matched_frames']),
        missed_tubes=sum(1 for t in tubes if not t['matched_frames']),
        mostly_tracked=sum(1 for t in tubes if t['matched_frames'] >= MOSTLY_TRACKED * t['frames']),
        mostly_lost=sum(1 for t in tubes if t['matched_frames'] < MOSTLY_LOST * t['frames']),
        id_switches=sum(t['id_switches'] for t in tubes),
        fragmentations=sum(t['fragmentations'] for t in tubes),
        false_positive_tracks=sum(1 for p in tracks if p['false_positive']),
        gt_instances=t_frames, pred_instances=p_frames, matched_instances=t_matched,
        instance_recall=_ratio(t_matched, t_frames),
        instance_precision=_ratio(sum(p['matched_frames'] for p in tracks), p_frames),
        track_births=sum(1 for p in tracks if p['born_late']),
        track_deaths=sum(1 for p in tracks if p['ended_early']),
        track_births_per_frame=_ratio(sum(1 for p in tracks if p['born_late']), transitions),
        track_deaths_per_frame=_ratio(sum(1 for p in tracks if p['ended_early']), transitions),
        gt_births_per_frame=_ratio(sum(1 for t in tubes if t['born_late']), transitions),
        gt_deaths_per_frame=_ratio(sum(1 for t in tubes if t['ended_early']), transitions),
        tube_lifetime_mean=_mean([t['lifetime'] for t in tubes]),
        tube_lifetime_median=_median([t['lifetime'] for t in tubes]),
        track_lifetime_mean=_mean([p['lifetime'] for p in tracks]),
        track_lifetime_median=_median([p['lifetime'] for p in tracks]),
        coverage_mean=_mean([t['coverage'] for t in tubes]),
        coverage_voxel_weighted=_ratio(sum(t['coverage'] * t['voxels'] for t in tubes), voxels),
        purity_mean=_mean([p['purity'] for p in tracks]),
        purity_voxel_weighted=_ratio(sum(p['purity'] * p['voxels'] for p in tracks),
                                     sum(p['voxels'] for p in tracks)),
        tubes_per_track_frame=_ratio(sum(p['tubes_per_frame'] * p['frames'] for p in tracks),
                                     p_frames),
        aq=_mean([t['aq'] for t in tubes]))


def summarize_records(sequences: Sequence[dict], settings: OccSTQSettings) -> dict:
    """``per_class`` ({class name: :func:`summarize_class`}, classes holding a tube or a track)
    and ``overall`` over the tube / track records of ``sequences``."""
    tubes = [t for seq in sequences for t in seq['tubes']]
    tracks = [p for seq in sequences for p in seq['tracks']]
    transitions = sum(seq['num_frames'] - 1 for seq in sequences)
    classes = sorted({r['class_id'] for r in tubes + tracks})
    per_class = {settings.class_names[cl]: summarize_class(
        [t for t in tubes if t['class_id'] == cl], [p for p in tracks if p['class_id'] == cl],
        transitions) for cl in classes}
    return dict(per_class=per_class, overall=summarize_class(tubes, tracks, transitions))


def diagnose_directories(gt_root: str, pred_dir: str, split: str = 'validation',
                         settings: Optional[OccSTQSettings] = None, iou_thr: float = 0.5,
                         missing_pred: str = 'error', load_interval: int = 1,
                         grid_shape: Tuple[int, ...] = GRID_SHAPE) -> dict:
    """Track diagnostics of a prediction folder against the gt tree (the layout, checks and
    errors of :func:`plan_frames`). Returns the report: ``sequences`` (one
    :meth:`TrackDiagnostics.close` dict each), ``per_class``, ``overall``, ``occstq`` (the
    OccSTQ numbers of the same frames), ``settings`` and ``iou_thr``."""
    settings = settings or OccSTQSettings()
    plan = plan_frames(gt_root, pred_dir, split, missing_pred, load_interval)
    n = int(np.prod(grid_shape))
    sequences, stats = [], []
    diag: Optional[TrackDiagnostics] = None
    for seq, frame, gt_path, pred_path in plan:
        if diag is None or diag.sequence_id != seq:
            if diag is not None:
                sequences.append(diag.close())
                stats.append(diag.occstq_stats)
            diag = TrackDiagnostics(seq, settings, iou_thr)
        gt = load_gt_frame(gt_path, grid_shape)
        if pred_path is None:
            sem = np.full(n, settings.num_classes - 1, dtype=np.uint8)
            inst = np.zeros(n, dtype=np.int16)
            source = f'{gt_path} (empty prediction)'
        else:
            sem, inst = load_pred_frame(pred_path, grid_shape)
            source = pred_path
        mask = evaluation_mask(gt['mask_camera'], gt['infov'], settings, grid_shape)
        diag.add_frame(sem, inst, gt['semantics'], gt['instances'], mask, frame_idx=frame,
                       source=source)
    sequences.append(diag.close())
    stats.append(diag.occstq_stats)
    occ = summarize(stats, settings)
    names = settings.class_names
    report = dict(settings=settings.to_dict(), iou_thr=iou_thr, split=split,
                  num_sequences=len(sequences), num_frames=sum(s['num_frames'] for s in sequences),
                  occstq=dict(OccSTQ=occ['OccSTQ'], AQ=occ['AQ'], mIoU=occ['mIoU'],
                              per_class_aq={names[cl]: occ['per_class_aq'][cl]
                                            for cl in settings.include_classes
                                            if occ['num_tubes'][cl]},
                              per_class_iou={names[cl]: occ['per_class_iou'][cl]
                                             for cl in settings.include_classes}))
    report.update(summarize_records(sequences, settings))
    report['sequences'] = sequences
    return report


def _fmt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return format(value * scale if scale != 1.0 else value, spec)


def format_report(report: dict) -> str:
    """Plain-text table: one row per sequence and class, then per class over all sequences,
    then the OccSTQ line of the same frames."""
    cols = [('tubes', 'gt_tubes', 'd'), ('tracks', 'pred_tracks', 'd'),
            ('matched', 'matched_tubes', 'd'), ('missed', 'missed_tubes', 'd'),
            ('MT', 'mostly_tracked', 'd'), ('ML', 'mostly_lost', 'd'),
            ('IDsw', 'id_switches', 'd'), ('frag', 'fragmentations', 'd'),
            ('FPtrk', 'false_positive_tracks', 'd'), ('born/f', 'track_births_per_frame', '.2f'),
            ('died/f', 'track_deaths_per_frame', '.2f'), ('gtborn/f', 'gt_births_per_frame', '.2f'),
            ('life_gt', 'tube_lifetime_mean', '.1f'), ('life_trk', 'track_lifetime_mean', '.1f'),
            ('cover', 'coverage_mean', '.3f'), ('purity', 'purity_mean', '.3f'),
            ('gt/trk', 'tubes_per_track_frame', '.2f'), ('AQ', 'aq', '.2f'),
            ('inst_rec', 'instance_recall', '.3f')]
    names = [n for seq in report['sequences'] for n in seq['per_class']] + list(report['per_class'])
    width = max([len('class'), len('all')] + [len(n) for n in names])
    header = f'{"seq":>4} {"class":<{width}} ' + ' '.join(f'{h:>{max(len(h), 6)}}'
                                                           for h, _, _ in cols)

    def row(seq: str, name: str, summary: dict) -> str:
        cells = []
        for h, key, spec in cols:
            scale = 100.0 if key == 'aq' else 1.0
            cells.append(f'{_fmt(summary[key], spec, scale):>{max(len(h), 6)}}')
        return f'{seq:>4} {name:<{width}} ' + ' '.join(cells)

    lines = [f'Track diagnostics: {report["num_sequences"]} sequences, {report["num_frames"]} '
             f'frames; a gt instance and a predicted instance match when their IoU in a frame '
             f'is > {report["iou_thr"]:g}', header, '-' * len(header)]
    for seq in report['sequences']:
        for name, summary in seq['per_class'].items():
            lines.append(row(str(seq['sequence_id']), name, summary))
    lines.append('-' * len(header))
    for name, summary in report['per_class'].items():
        lines.append(row('all', name, summary))
    lines.append(row('all', 'all', report['overall']))
    occ = report['occstq']
    lines.append('-' * len(header))
    lines.append(f'OccSTQ {_fmt(occ["OccSTQ"], ".2f", 100)}  AQ {_fmt(occ["AQ"], ".2f", 100)}  '
                 f'mIoU {_fmt(occ["mIoU"], ".2f", 100)} (same frames; AQ column = OccSTQ AQ '
                 f'of the class x 100; life in frames; born/died/gtborn per frame after the '
                 f'first; purity: share of a track\'s voxels in its best gt instance per frame; '
                 f'gt/trk: gt instances a track touches per frame)')
    return '\n'.join(lines)
