"""Procedural synthetic data in the exact TrackOcc-Waymo on-disk layout.

Use :func:`generate_synthetic_dataset` (or ``tools/create_data.py synthetic``). The public
names are imported lazily, so ``trackocc.datasets.synthetic.constants`` (class table, colours)
can be used without loading numba.
"""
from ...utils.lazy_exports import lazy_exports

_EXPORTS = {
    'generate_synthetic_dataset': '.generator',
    'warmup_kernels': '.generator',
    'RenderConfig': '.sequence',
    'SequenceGenerator': '.sequence',
    'generate_sequence': '.sequence',
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
