"""Counting the host's reads of tensor values (``.item()``, ``float(t)``, ``bool(t)``, a
``nonzero``): each one a wait for the device on a GPU, counted on any device by the ATen op
that makes it. Importable because pytest puts tests/ on ``sys.path``."""
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
