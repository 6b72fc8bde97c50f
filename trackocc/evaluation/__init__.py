"""OccSTQ evaluation: numpy core (``functional``, shared with tools/evaluate_predictions.py) and
the registered :class:`OccSTQMetric`.

Public names are imported on first use: ``trackocc.evaluation.functional`` loads with numpy
only (no torch / mmengine / mmdet3d).
"""
from ..utils.lazy_exports import lazy_exports

_EXPORTS = {'OccSTQMetric': '.metrics', 'OccSTQSettings': '.functional'}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
