"""Final OccSTQ numbers from closed sequences, per-sequence rows and a readable table.

numpy only.
"""
import math
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from trackocc.utils.output_files import atomic_write_text
from .sequence_accumulator import EPS, SequenceAccumulator, SequenceStats
from .settings import OccSTQSettings


def merge_partial_states(states: Iterable[Dict[int, SequenceAccumulator]]
                         ) -> Dict[int, SequenceAccumulator]:
    """Merge dicts ``{sequence_id: SequenceAccumulator}`` (e.g. one per process).

    Accumulators of the same sequence are added (their frames must be disjoint).
    """
    merged: Dict[int, SequenceAccumulator] = {}
    for state in states:
        for seq_id, acc in state.items():
            if seq_id in merged:
                merged[seq_id].merge(acc)
            else:
                merged[seq_id] = acc
    return merged


def _semantic_scores(conf: np.ndarray, settings: OccSTQSettings) -> Dict[str, object]:
    """IoU per class from a (pred, gt) confusion matrix, reference style."""
    include = list(settings.include_classes)
    conf = conf.astype(np.float64)
    conf[:, list(settings.ignore_classes)] = 0
    tp = conf.diagonal()
    fp = conf.sum(axis=1) - tp
    fn = conf.sum(axis=0) - tp
    union = tp + fp + fn
    iou = tp / np.maximum(union, EPS)
    if settings.miou_over_all_classes:
        miou = float(iou[include].mean()) if include else math.nan
    else:
        present = [c for c in include if union[c] > 0]
        miou = float(iou[present].mean()) if present else math.nan
    n_inc = max(len(include), 1)
    return dict(iou=iou, mIoU=miou,
                mIoU_precision=float(np.sum(tp / np.maximum(tp + fp, EPS)) / n_inc),
                mIoU_recall=float(np.sum(tp / np.maximum(tp + fn, EPS)) / n_inc))


def _aq_overall(aq_total: float, tubes: int, pred_tracks: int,
                settings: OccSTQSettings) -> float:
    if tubes > 0:
        return aq_total / tubes
    if settings.empty_aq == 'nan':
        return math.nan
    return 1.0 if pred_tracks == 0 else 0.0


def summarize(stats: Iterable[SequenceStats], settings: OccSTQSettings) -> Dict[str, object]:
    """OccSTQ over all sequences.

    Returns a dict: ``OccSTQ``, ``AQ``, ``mIoU`` (floats, NaN possible), ``per_class_iou`` and
    ``per_class_aq`` (lists of C floats), ``num_tubes`` (list of C ints), ``AQ_precision``,
    ``AQ_recall``, ``mIoU_precision``, ``mIoU_recall`` (the reference's auxiliary numbers),
    ``num_sequences``, ``num_frames``, ``settings``.
    """
    stats = sorted(stats, key=lambda st: st.sequence_id)
    ids = [st.sequence_id for st in stats]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f'summarize: sequences {dup} were closed more than once; merge their '
                         f'partial states before closing')
    c = settings.num_classes
    include = list(settings.include_classes)
    conf = np.zeros((c, c), dtype=np.int64)
    aq_per_class = np.zeros(c, dtype=np.float64)
    tubes = np.zeros(c, dtype=np.int64)
    aq_total = 0.0
    pred_tracks = num_pairs = num_frames = 0
    prec_sum = rec_sum = 0.0
    for st in stats:  # sequence order, then class order, as the reference sums
        conf += st.confusion
        for cl in include:
            aq_per_class[cl] += st.aq_sum[cl]
            aq_total += st.aq_sum[cl]
        tubes += st.num_tubes
        pred_tracks += st.num_pred_tracks
        prec_sum += st.precision_sum
        rec_sum += st.recall_sum
        num_pairs += st.num_pairs
        num_frames += st.num_frames
    sem = _semantic_scores(conf, settings)
    aq = _aq_overall(aq_total, int(tubes.sum()), pred_tracks, settings)
    miou = sem['mIoU']
    occstq = math.sqrt(aq * miou) if not (math.isnan(aq) or math.isnan(miou)) else math.nan
    return dict(
        OccSTQ=float(occstq), AQ=float(aq), mIoU=float(miou),
        per_class_iou=[float(v) for v in sem['iou']],
        per_class_aq=[float(v) for v in aq_per_class / np.maximum(tubes, EPS)],
        num_tubes=[int(v) for v in tubes],
        AQ_precision=prec_sum / num_pairs if num_pairs else math.nan,
        AQ_recall=rec_sum / num_pairs if num_pairs else math.nan,
        mIoU_precision=sem['mIoU_precision'], mIoU_recall=sem['mIoU_recall'],
        num_sequences=len(stats), num_frames=num_frames,
        settings=settings.to_dict())


def sequence_rows(stats: Iterable[SequenceStats], settings: OccSTQSettings) -> List[Dict]:
    """One dict per sequence (its own OccSTQ / AQ / mIoU / tubes), for a CSV."""
    rows = []
    for st in sorted(stats, key=lambda s: s.sequence_id):
        one = summarize([st], settings)
        rows.append(dict(sequence_id=st.sequence_id, num_frames=st.num_frames,
                         num_tubes=int(st.num_tubes.sum()), num_pred_tracks=st.num_pred_tracks,
                         OccSTQ=one['OccSTQ'], AQ=one['AQ'], mIoU=one['mIoU']))
    return rows


def write_sequence_csv(path: str, rows: Sequence[Dict]) -> None:
    """Write :func:`sequence_rows` output as CSV (NaN written as ``nan``), atomically
    (temporary file next to ``path``, then renamed over it)."""
    import csv
    import io
    keys = ['sequence_id', 'num_frames', 'num_tubes', 'num_pred_tracks', 'OccSTQ', 'AQ', 'mIoU']
    buf = io.StringIO(newline='')
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        # float() first: numpy >= 2 writes np.float64(...) as its repr
        writer.writerow({k: (repr(float(row[k])) if isinstance(row[k], float) else row[k])
                         for k in keys})
    atomic_write_text(path, buf.getvalue())


def format_table(result: Dict[str, object], class_names: Optional[Sequence[str]] = None,
                 settings: Optional[OccSTQSettings] = None) -> str:
    """Plain-text table: one row per class (IoU, AQ, gt tubes), then the summary line."""
    settings = settings or OccSTQSettings()
    names = list(class_names or settings.class_names)
    iou, aq, tubes = result['per_class_iou'], result['per_class_aq'], result['num_tubes']
    width = max(len('class'), *(len(n) for n in names))
    lines = [f'{"id":>3} {"class":<{width}} {"IoU":>8} {"AQ":>8} {"tubes":>6}',
             '-' * (width + 30)]
    for cl, name in enumerate(names):
        if cl in settings.ignore_classes:
            lines.append(f'{cl:>3} {name:<{width}} {"ignored":>8} {"":>8} {"":>6}')
            continue
        aq_txt = f'{aq[cl] * 100:8.2f}' if tubes[cl] else f'{"-":>8}'
        lines.append(f'{cl:>3} {name:<{width}} {iou[cl] * 100:8.2f} {aq_txt} {tubes[cl]:>6d}')
    lines.append('-' * (width + 30))
    lines.append(f'OccSTQ {result["OccSTQ"] * 100:.2f}  AQ {result["AQ"] * 100:.2f}  '
                 f'mIoU {result["mIoU"] * 100:.2f}  ({result["num_sequences"]} sequences, '
                 f'{result["num_frames"]} frames)')
    return '\n'.join(lines)
