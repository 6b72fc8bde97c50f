"""A camera rig's inference inputs at fixed addresses, for CUDA graphs that serve every rig.

The view transformer's bev_pool ranks and the occupancy encoder's camera-query plan depend
only on the cameras. Computed per rig and captured inside a CUDA graph as constants, they make
each new rig a new graph (a capture of tens of milliseconds at every sequence start). Padded
to fixed sizes and held here instead, they are graph *inputs* that a new rig rewrites in place:
the graph replays for every rig, and only a rig that needs larger sizes makes another one.
"""
from typing import Any, Hashable, Optional

import torch
from torch.utils._pytree import tree_flatten, tree_map

from .cuda_graph import StableOutputs, mark_static_input


class RigInputs:
    """The inputs of the current camera rig (a tensor or a tuple / NamedTuple of tensors).

    :meth:`get` returns them while the rig key is unchanged; :meth:`store` writes a new rig's
    values into the same buffers (new ones only when a shape, dtype or device changes) and
    marks them with :func:`~trackocc.utils.cuda_graph.mark_static_input`, so that a
    :class:`~trackocc.utils.cuda_graph.CUDAGraphModule` given them reads them in place.
    ``allocations`` counts the buffer sets made (1 while every rig fits the first one).
    """

    def __init__(self):
        self.key: Optional[Hashable] = None
        self.value: Any = None
        self._buffers = StableOutputs()

    @property
    def allocations(self) -> int:
        return self._buffers.allocations

    def get(self, key: Optional[Hashable]) -> Any:
        """The stored inputs if ``key`` is the stored rig's (never for a None key)."""
        return self.value if key is not None and key == self.key else None

    def store(self, key: Hashable, value: Any) -> Any:
        """Hold ``value`` as rig ``key``'s inputs; returns it in the held buffers."""
        if key is None:
            raise ValueError('RigInputs.store: a rig needs a key (e.g. the bytes of its '
                             'camera matrices)')
        # contiguous: a compiled module reading a sliced buffer would see other strides in
        # a graph's warm-up run, which works on copies, than in its capture
        held = self._buffers.write(tree_map(
            lambda x: x.contiguous() if isinstance(x, torch.Tensor) else x, value))
        for x in tree_flatten(held)[0]:
            if isinstance(x, torch.Tensor):
                mark_static_input(x)
        self.key, self.value = key, held
        return held

    def clear(self) -> None:
        """Forget the rig (the buffers stay for the next one)."""
        self.key = self.value = None
