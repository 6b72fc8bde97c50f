"""OccSTQ of a benchmark's held-out predictions (the project's :class:`OccSTQMetric`, reference
and strict settings as ``tools/evaluate_predictions.py`` without / with ``--strict``), the
accuracy guard of a fast mode against the first mode, and where a fast mode's predictions
differ from the first mode's (voxel by voxel, sequence by sequence)."""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

# issue 16's guard: OccSTQ of a fast mode within 0.1 points (OccSTQ x 100) of the reference mode
GUARD_TOLERANCE_POINTS = 0.1
SETTINGS = ('reference', 'strict')


def score_predictions(gt_frames: Sequence, predictions: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                      settings: str = 'reference',
                      by_sequence: Optional[List[Dict[str, object]]] = None) -> Dict[str, float]:
    """OccSTQ, AQ and mIoU (fractions, NaN possible) of ``predictions`` (semantics, instances)
    against ``gt_frames`` (CPU ``OccDataSample`` with meta and ``gt_occ``), frame by frame in
    stream order, as ``tools/test.py``'s metric scores them. ``by_sequence``: a list that gets
    each sequence's own ``sequence``, ``frames``, ``OccSTQ``, ``AQ`` and ``mIoU`` (the same
    pass)."""
    from trackocc.evaluation.metrics import OccSTQMetric
    from trackocc.structures import OccupancyData
    if len(gt_frames) != len(predictions):
        raise ValueError(f'score_predictions: {len(predictions)} predictions for '
                         f'{len(gt_frames)} frames')
    metric = OccSTQMetric(settings=None if settings == 'reference' else settings,
                          print_table=False)
    for gt, (sem, inst) in zip(gt_frames, predictions):
        frame = gt.clone()
        frame.pred_occ = OccupancyData(semantics=sem, instances=inst)
        metric.process(None, [frame])
    out = metric.evaluate(len(gt_frames))
    if by_sequence is not None:
        by_sequence.extend(dict(sequence=row['sequence_id'], frames=row['num_frames'],
                                **{k: float(row[k]) for k in ('OccSTQ', 'AQ', 'mIoU')})
                           for row in metric.sequence_results)
    return {k: float(out[f'occstq/{k}']) for k in ('OccSTQ', 'AQ', 'mIoU')}


def score_all(gt_frames: Sequence, predictions,
              by_sequence: Optional[List[Dict[str, object]]] = None
              ) -> Dict[str, Dict[str, float]]:
    """:func:`score_predictions` under every name of :data:`SETTINGS`; ``by_sequence`` gets
    the reference settings' per-sequence scores."""
    return {s: score_predictions(gt_frames, predictions, s,
                                 by_sequence if s == 'reference' else None) for s in SETTINGS}


def occstq_guard(modes: Dict[str, dict],
                 tolerance_points: float = GUARD_TOLERANCE_POINTS) -> Dict[str, object]:
    """|OccSTQ(mode) - OccSTQ(first mode)| in points (x 100) for every later mode, per
    settings; ``pass`` when every difference is finite and <= ``tolerance_points``. Modes
    without ``occstq`` (failed ones) fail the guard. With ``occstq_by_sequence`` in both
    modes, also the signed difference of each sequence (``sequence_diff_points``)."""
    names: List[str] = list(modes)
    if not names or 'occstq' not in modes[names[0]]:
        return dict(reference_mode=names[0] if names else None, modes={},
                    error='the first mode has no OccSTQ')
    ref = modes[names[0]]['occstq']
    out = {}
    for name in names[1:]:
        scores = modes[name].get('occstq')
        if scores is None:
            out[name] = {'pass': False, 'error': 'no OccSTQ (the mode failed)'}
            continue
        diffs = {s: abs(scores[s]['OccSTQ'] - ref[s]['OccSTQ']) * 100 for s in ref}
        out[name] = dict({f'abs_diff_points_{s}': d for s, d in diffs.items()},
                         **{'pass': all(math.isfinite(d) and d <= tolerance_points
                                        for d in diffs.values())})
        by_seq, ref_by_seq = (modes[n].get('occstq_by_sequence') for n in (name, names[0]))
        if by_seq and ref_by_seq:  # signed, reference settings: which sequences moved it
            out[name]['sequence_diff_points'] = [
                (seq['OccSTQ'] - ref_seq['OccSTQ']) * 100
                for seq, ref_seq in zip(by_seq, ref_by_seq)]
    return dict(reference_mode=names[0], tolerance_points=tolerance_points, modes=out)


def sequence_spans(sequence_ids: Sequence) -> List[Tuple[object, int, int]]:
    """(sequence id, first frame, end frame) of each run of equal ids in stream order."""
    spans: List[list] = []
    for index, seq in enumerate(sequence_ids):
        if not spans or spans[-1][0] != seq:
            spans.append([seq, index, index])
        spans[-1][2] = index + 1
    return [tuple(span) for span in spans]


def prediction_agreement(reference, predictions, sequence_ids: Sequence) -> Dict[str, object]:
    """Where ``predictions`` differ from ``reference`` (both lists of per-frame (semantics,
    instances) tensors of one stream): per frame the voxels whose class differs
    (``semantic_diff_voxels``) and those of the same class whose instance id differs
    (``instance_diff_voxels``; ids are the tracker's, so a track born in another order
    differs from there on), the first frame that differs at all, and per sequence the
    frames that differ and the mean counts."""
    if len(reference) != len(predictions) or len(reference) != len(sequence_ids):
        raise ValueError(f'prediction_agreement: {len(predictions)} predictions, '
                         f'{len(reference)} reference frames and {len(sequence_ids)} '
                         'sequence ids')
    semantic, instance = [], []
    for (sem_ref, inst_ref), (sem, inst) in zip(reference, predictions):
        same_class = sem == sem_ref
        semantic.append(int((~same_class).sum()))
        instance.append(int((same_class & (inst != inst_ref)).sum()))
    differs = [a + b > 0 for a, b in zip(semantic, instance)]
    sequences = []
    for seq, start, end in sequence_spans(sequence_ids):
        frames = end - start
        sequences.append(dict(sequence=seq, frames=frames,
                              differing_frames=sum(differs[start:end]),
                              mean_semantic_diff_voxels=sum(semantic[start:end]) / frames,
                              mean_instance_diff_voxels=sum(instance[start:end]) / frames))
    return dict(semantic_diff_voxels=semantic, instance_diff_voxels=instance,
                first_differing_frame=differs.index(True) if any(differs) else None,
                sequences=sequences)
