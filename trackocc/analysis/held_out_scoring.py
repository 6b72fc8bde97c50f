"""OccSTQ of a benchmark's held-out predictions (the project's :class:`OccSTQMetric`, reference
and strict settings as ``tools/evaluate_predictions.py`` without / with ``--strict``) and the
accuracy guard of a fast mode against the first mode."""
import math
from typing import Dict, List, Sequence, Tuple

import torch

# issue 16's guard: OccSTQ of a fast mode within 0.1 points (OccSTQ x 100) of the reference mode
GUARD_TOLERANCE_POINTS = 0.1
SETTINGS = ('reference', 'strict')


def score_predictions(gt_frames: Sequence, predictions: Sequence[Tuple[torch.Tensor, torch.Tensor]],
                      settings: str = 'reference') -> Dict[str, float]:
    """OccSTQ, AQ and mIoU (fractions, NaN possible) of ``predictions`` (semantics, instances)
    against ``gt_frames`` (CPU ``OccDataSample`` with meta and ``gt_occ``), frame by frame in
    stream order, as ``tools/test.py``'s metric scores them."""
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
    return {k: float(out[f'occstq/{k}']) for k in ('OccSTQ', 'AQ', 'mIoU')}


def score_all(gt_frames: Sequence, predictions) -> Dict[str, Dict[str, float]]:
    """:func:`score_predictions` under every name of :data:`SETTINGS`."""
    return {s: score_predictions(gt_frames, predictions, s) for s in SETTINGS}


def occstq_guard(modes: Dict[str, dict],
                 tolerance_points: float = GUARD_TOLERANCE_POINTS) -> Dict[str, object]:
    """|OccSTQ(mode) - OccSTQ(first mode)| in points (x 100) for every later mode, per
    settings; ``pass`` when every difference is finite and <= ``tolerance_points``. Modes
    without ``occstq`` (failed ones) fail the guard."""
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
    return dict(reference_mode=names[0], tolerance_points=tolerance_points, modes=out)
