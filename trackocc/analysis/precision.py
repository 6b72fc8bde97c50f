"""Benchmark modes: a precision, optionally with ``torch.compile`` or CUDA graphs; the
autocast-weight probe of the low-precision modes."""
from contextlib import nullcontext
from typing import Optional, Tuple, Union

import torch

from ..utils.autocast_weights import AutocastWeights
from .streaming import synthetic_stream

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


def probe_autocast_weights(model, device: Union[torch.device, str], dtype: torch.dtype,
                           inputs=None, clip=None):
    """:class:`~trackocc.utils.autocast_weights.AutocastWeights` of the layers that one frame
    (``inputs`` / ``clip``, else a synthetic frame) runs under autocast to ``dtype``; enter it
    to hold them in ``dtype`` (which also drops CUDA graphs, so the probe's eager call is no
    warm-up of the held weights). The probe leaves no tracks or prediction behind."""
    if inputs is None:
        inputs, clip, _ = synthetic_stream(model)

    def one_frame():
        model.reset_tracks()
        with torch.no_grad(), autocast(device, dtype):
            model.predict(inputs, [clip])
        clip.video_data_samples[0].pop('pred_occ', None)

    held = AutocastWeights(model, dtype).probe(one_frame)
    model.reset_tracks()
    return held
