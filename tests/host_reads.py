"""Counting the host's reads of tensor values (``.item()``, ``float(t)``, ``bool(t)``, a
``nonzero``): each one a wait for the device on a GPU, counted on any device by the ATen op
that makes it; and, on a GPU, a region where such a wait fails (:func:`no_device_waits`).
Importable because pytest puts tests/ on ``sys.path``."""
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SCALAR_READS = frozenset({'_local_scalar_dense', 'item', 'is_nonzero', 'nonzero'})


class HostReads(TorchDispatchMode):
    """Counts, while on, the ops in ``names`` (default :data:`SCALAR_READS`) as ``reads``."""

    def __init__(self, names=SCALAR_READS):
        super().__init__()
        self.names = frozenset(names)
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ in self.names:
            self.reads += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def no_device_waits():
    """Inside, an op that makes the host wait for the CUDA device raises (torch's
    ``set_sync_debug_mode('error')``); the device is synchronised first, so the work queued
    before does not count."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode('default')
