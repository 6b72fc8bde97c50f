"""Small tensors made from host values without stalling the GPU stream.

A host-to-device copy from pageable memory (``torch.tensor(list, device='cuda')``,
``x.new_tensor(list)``, ``torch.from_numpy(a).to('cuda')``) synchronises the host with the
device, so a per-frame call of one such line empties the queue of launched kernels. Constants
are therefore created once per (values, device, dtype); per-frame arrays go through pinned
memory with a non-blocking copy.
"""
import functools
from typing import Sequence, Union

import numpy as np
import torch
from torch import Tensor


@functools.lru_cache(maxsize=512)
def _constant(values: tuple, shape: tuple, device: str, dtype: torch.dtype) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device).view(shape)


def device_constant(values: Union[Sequence, np.ndarray], device: Union[str, torch.device],
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """A cached tensor holding ``values`` on ``device`` (callers must not modify it)."""
    arr = np.asarray(values)
    return _constant(tuple(arr.reshape(-1).tolist()), arr.shape, str(torch.device(device)),
                     dtype)


def to_device_async(array: Union[np.ndarray, Tensor], device: Union[str, torch.device],
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """``array`` as a ``dtype`` tensor on ``device``; to CUDA through pinned memory with a
    non-blocking copy (no host synchronisation)."""
    device = torch.device(device)
    t = torch.as_tensor(array, dtype=dtype)
    if device.type != 'cuda' or t.device.type != 'cpu':
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
