"""numpy-only OccSTQ core shared by :class:`OccSTQMetric` and ``tools/evaluate_predictions.py``.

Nothing here imports torch or mmengine (the file formats and the class table come from
:mod:`trackocc.structures`, numpy only), so the offline tool starts fast.
"""
from trackocc.structures import (GRID_SHAPE, OCC_CLASS_NAMES, SPLIT_IDS, OccFileError,
                                 load_gt_frame, load_pred_frame, make_sample_idx,
                                 split_sample_idx, write_pred_frame)
from .occstq_offline import (MISSING_PRED_MODES, SPLIT_ALIASES, evaluate_directories,
                             plan_frames, resolve_gt_root, scoring_inputs)
from .occstq_summary import (atomic_write_text, format_table, merge_partial_states,
                             sequence_rows, summarize, write_sequence_csv)
from .sequence_accumulator import (SequenceAccumulator, SequenceStats, evaluation_mask)
from .settings import OccSTQSettings

__all__ = [
    'GRID_SHAPE', 'SPLIT_IDS', 'OccFileError', 'load_gt_frame',
    'load_pred_frame', 'make_sample_idx', 'split_sample_idx', 'write_pred_frame',
    'MISSING_PRED_MODES', 'SPLIT_ALIASES', 'evaluate_directories', 'plan_frames',
    'resolve_gt_root', 'scoring_inputs', 'format_table',
    'merge_partial_states', 'sequence_rows', 'summarize', 'write_sequence_csv',
    'atomic_write_text',
    'SequenceAccumulator', 'SequenceStats', 'evaluation_mask', 'OCC_CLASS_NAMES',
    'OccSTQSettings'
]
