"""Training scalars logged without a host wait per iteration.

MMEngine logs each iteration's loss terms (``RuntimeInfoHook``) and the gradient norm
(``OptimWrapper._clip_grad``) as Python numbers, read from the device as they are made: on a
GPU each iteration then ends by waiting for its backward pass, and the host cannot prepare the
next iteration (optimizer step, weight average, data, the encoders' launches) while the GPU
finishes. :class:`DeferredScalars` keeps an iteration's 0-dim tensors instead, copies them to
the host in one non-blocking copy per device and dtype at the iteration's end, and writes
them into the message hub, in iteration order and as the same numbers, when asked to
(:meth:`DeferredScalars.flush`: before the logger reads them, a checkpoint saves the hub, or
training ends). :class:`~trackocc.engine.hooks.HostSyncFreeRuntimeInfoHook` installs and
flushes it; the ``HostSyncFree*OptimWrapper`` s put the gradient norm into it.
"""
from collections import defaultdict
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
from mmengine.logging import MessageHub
from torch import Tensor

from trackocc.utils.host_copy import HostCopy

# the message hub's runtime-info key of the installed store (not saved with the hub)
DEFERRED_SCALARS_KEY = 'deferred_device_scalars'


class _Iteration:
    """One iteration's scalars: keys in the order given, their values (Python numbers; None
    where a tensor was, until :meth:`resolve`) and the host copies of the tensors, each with
    the positions of its values."""

    def __init__(self):
        self.keys: List[str] = []
        self.values: List[Any] = []
        self.copies: List[Tuple[HostCopy, List[int]]] = []

    def resolve(self) -> List[Any]:
        values = list(self.values)
        for copy, positions in self.copies:
            # waits for this copy only: long done by now, as a rule
            for position, value in zip(positions, copy.result().tolist()):
                values[position] = value
        return values


class DeferredScalars:
    """Scalars bound for ``message_hub``'s histories (``update_scalar``), read back one or more
    iterations after they were made.

    :meth:`add` takes a key and a number or a one-element tensor of the iteration in
    progress, :meth:`end_iteration` starts the copy of its tensors to the host (no wait) and
    :meth:`flush` writes every finished iteration into the hub, oldest first, each key's values
    in order: the hub ends with the histories MMEngine's immediate reads give.

    Args:
        message_hub (MessageHub): the hub the values go to.
    """

    def __init__(self, message_hub: MessageHub):
        self.message_hub = message_hub
        self._current = _Iteration()
        self._pending: List[_Iteration] = []

    @classmethod
    def install(cls, message_hub: MessageHub) -> 'DeferredScalars':
        """A new store kept in ``message_hub``'s runtime info (not saved with it)."""
        store = cls(message_hub)
        message_hub.update_info(DEFERRED_SCALARS_KEY, store, resumed=False)
        return store

    def uninstall(self) -> None:
        """Flush, and take this store out of its hub (the wrappers read the gradient norm
        themselves again)."""
        self.flush()
        if self.message_hub.get_info(DEFERRED_SCALARS_KEY) is self:
            self.message_hub.pop_info(DEFERRED_SCALARS_KEY)

    @staticmethod
    def of(message_hub: MessageHub) -> Optional['DeferredScalars']:
        """The store installed in ``message_hub``, or None."""
        store = message_hub.get_info(DEFERRED_SCALARS_KEY)
        return store if isinstance(store, DeferredScalars) else None

    def __len__(self) -> int:
        """Finished iterations not yet flushed."""
        return len(self._pending)

    def add(self, key: str, value) -> None:
        """Keep ``value`` (a number or a one-element tensor) for ``key`` in this iteration."""
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(f'DeferredScalars: {key} must be a number or a one-element '
                                 f'tensor to be logged, got a tensor of shape '
                                 f'{tuple(value.shape)}')
        elif not isinstance(value, (int, float, np.number)):  # MMEngine's kinds
            raise TypeError(f'DeferredScalars: {key} must be a number or a one-element tensor '
                            f'to be logged, got {type(value).__name__}')
        self._current.keys.append(key)
        self._current.values.append(value)

    def end_iteration(self) -> None:
        """Close this iteration: its tensors stacked by device and dtype, each stack copied to
        pinned host memory without waiting (a blocking copy from devices other than CUDA)."""
        it, self._current = self._current, _Iteration()
        if not it.keys:
            return
        groups = defaultdict(list)  # (device, dtype) -> positions
        for i, value in enumerate(it.values):
            if isinstance(value, Tensor):
                groups[(value.device, value.dtype)].append(i)
        with torch.no_grad():
            for (device, dtype), positions in groups.items():
                stacked = torch.stack([it.values[i].detach().reshape(()) for i in positions])
                for i in positions:
                    it.values[i] = None
                it.copies.append((HostCopy(stacked), positions))
        self._pending.append(it)

    def flush(self) -> int:
        """Write the finished iterations into the hub (``update_scalar`` per key, oldest
        first); returns how many."""
        flushed, self._pending = self._pending, []
        for it in flushed:
            for key, value in zip(it.keys, it.resolve()):
                self.message_hub.update_scalar(key, value)
        return len(flushed)
