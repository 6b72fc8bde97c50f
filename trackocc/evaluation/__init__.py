"""OccSTQ evaluation: numpy core (``functional``, shared with tools/evaluate_predictions.py) and
the registered :class:`OccSTQMetric`."""
from . import functional  # noqa: F401
from .functional import OccSTQSettings
from .metrics import OccSTQMetric

__all__ = ['OccSTQMetric', 'OccSTQSettings']
