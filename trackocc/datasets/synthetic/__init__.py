"""Procedural synthetic data in the exact TrackOcc-Waymo on-disk layout.

Use :func:`generate_synthetic_dataset` (or ``tools/create_data.py synthetic``). Importing this
package pulls in numba; ``import trackocc`` does not import it.
"""
from .generator import generate_synthetic_dataset, warmup_kernels
from .sequence import RenderConfig, SequenceGenerator, generate_sequence

__all__ = ['generate_synthetic_dataset', 'warmup_kernels', 'RenderConfig', 'SequenceGenerator',
           'generate_sequence']
