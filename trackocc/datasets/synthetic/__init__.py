"""Procedural synthetic data in the exact TrackOcc-Waymo on-disk layout.

Use :func:`generate_synthetic_dataset` (or ``tools/create_data.py synthetic``). The public
names are imported lazily, so ``trackocc.datasets.synthetic.constants`` (class table, colours)
can be used without loading numba.
"""
import importlib

_EXPORTS = {
    'generate_synthetic_dataset': '.generator',
    'warmup_kernels': '.generator',
    'RenderConfig': '.sequence',
    'SequenceGenerator': '.sequence',
    'generate_sequence': '.sequence',
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
