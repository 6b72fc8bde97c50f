from .occstq_metric import OccSTQMetric, iter_frames

__all__ = ['OccSTQMetric', 'iter_frames']
