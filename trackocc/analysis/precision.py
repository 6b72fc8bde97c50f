"""Benchmark modes: a precision, optionally with ``torch.compile`` or CUDA graphs."""
from contextlib import nullcontext
from typing import Optional, Tuple, Union

import torch

MODES = ('fp32', 'fp16', 'bf16', 'compile', 'compile-fp16', 'compile-bf16', 'graph',
         'graph-fp16', 'graph-bf16')
DTYPES = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def split_mode(mode: str) -> Tuple[Optional[str], Optional[torch.dtype]]:
    """``'compile-bf16'`` -> ``('compile', torch.bfloat16)``; ``'graph'`` -> ``('graph', None)``;
    ``'fp32'`` -> ``(None, None)`` (None dtype: no autocast)."""
    if mode not in MODES:
        raise ValueError(f'benchmark: unknown mode {mode!r}, choose from {MODES}')
    kind = mode.split('-', 1)[0] if mode.startswith(('compile', 'graph')) else None
    precision = mode.split('-', 1)[1] if '-' in mode else ('fp32' if kind else mode)
    return kind, DTYPES[precision]


def autocast(device: Union[torch.device, str], dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context for None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
