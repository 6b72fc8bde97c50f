"""The samples of a batch as tensors, without a zero-filled gradient of the batch each."""
from typing import Tuple

from torch import Tensor


def batch_samples(x: Tensor, keepdim: bool = False) -> Tuple[Tensor, ...]:
    """The B samples of ``x`` (B, ...), each (...) or, with ``keepdim``, (1, ...).

    In the backward pass ``x[b]`` and ``x[b:b + 1]`` each write a zero-filled gradient of the
    whole batch (and a sum joins them); ``unbind`` / ``split`` join the samples' gradients in
    one stack / concatenation, and at B = 1 the sample is ``x`` itself (``squeeze``, or ``x``
    with ``keepdim``), no copy at all. The values are the same views either way.
    """
    if x.shape[0] == 1:
        return (x, ) if keepdim else (x.squeeze(0), )
    return x.split(1) if keepdim else x.unbind(0)
