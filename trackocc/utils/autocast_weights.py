"""Convolution and linear weights held in the autocast dtype during inference.

Under ``torch.autocast`` every convolution and linear layer casts its float32 weight and bias
to the autocast dtype on each call: one cast kernel per tensor per frame, and a CUDA graph
replays them too (its capture runs with autocast's cast cache off). Holding the weights in
that dtype while a low-precision mode runs removes the casts and gives the same results bit
for bit (autocast's cast is the same round-to-nearest conversion), as long as the layers are
only called under autocast to that dtype. Models turn autocast off in places (TrackOcc's
depth net, its float32 regions outside the encoders and head): :meth:`AutocastWeights.probe`
keeps exactly the layers that one sample call ran under autocast to that dtype. A layer called
outside autocast with converted weights fails with a dtype error, never silently.
"""
from typing import Callable, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

from .cuda_graph import drop_graphs

# layers whose weight and bias autocast casts on every call
AUTOCAST_LAYERS = (_ConvNd, nn.Linear)


class AutocastWeights:
    """Context manager: the conv / linear weights and biases of ``module`` (or of its named
    sub-modules) held in ``dtype`` inside the block, the original tensors restored on exit.

    Args:
        module (nn.Module): e.g. the detector.
        dtype (torch.dtype): the autocast dtype of the block (``torch.bfloat16``,
            ``torch.float16``).
        names (Iterable[str], optional): attributes of ``module`` to convert (e.g. the
            CUDA-graphed encoders); default the whole module.

    ``count`` is the number of layers converted. Inference only: the block refuses a module in
    training mode (the optimizer holds the float32 parameters). Entering and leaving drop the
    CUDA graphs of the module's :class:`~trackocc.utils.cuda_graph.CUDAGraphModule` wrappers
    (a graph reads the weight tensors it was captured with): they warm up and capture again.

    Example::

        held = AutocastWeights(model, torch.bfloat16).probe(run_one_frame_under_autocast)
        with held, torch.autocast('cuda', dtype=torch.bfloat16):
            ...
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype,
                 names: Optional[Iterable[str]] = None) -> None:
        if not dtype.is_floating_point or dtype == torch.float32:
            raise ValueError(f'AutocastWeights: dtype must be a low-precision float, got {dtype}')
        self.module, self.dtype = module, dtype
        self.names = None if names is None else list(names)
        self._saved: List[Tuple[nn.Parameter, torch.Tensor]] = []
        self._selected: Optional[set] = None  # ids of the layers kept by probe()
        self.count = 0

    def probe(self, call: Callable[[], object]) -> 'AutocastWeights':
        """Run ``call()`` once and keep only the layers it called, every time, under autocast
        to ``dtype`` (on the device of their weight); returns ``self``."""
        seen, outside = set(), set()

        def record(layer, _args):
            device = layer.weight.device.type
            under = torch.is_autocast_enabled(device) and \
                torch.get_autocast_dtype(device) == self.dtype
            (seen if under else outside).add(id(layer))

        handles = [layer.register_forward_pre_hook(record) for layer in self._layers(False)]
        try:
            call()
        finally:
            for handle in handles:
                handle.remove()
        self._selected = seen - outside
        return self

    def _layers(self, selected_only: bool = True):
        roots = [self.module] if self.names is None else \
            [getattr(self.module, n) for n in self.names if getattr(self.module, n, None)
             is not None]
        seen = set()
        for root in roots:
            for layer in root.modules():
                if isinstance(layer, AUTOCAST_LAYERS) and id(layer) not in seen:
                    seen.add(id(layer))
                    if not selected_only or self._selected is None or \
                            id(layer) in self._selected:
                        yield layer

    def __enter__(self) -> 'AutocastWeights':
        if self.module.training:
            raise RuntimeError('AutocastWeights: inference only (call model.eval() first)')
        for layer in self._layers():
            for p in (layer.weight, getattr(layer, 'bias', None)):
                if p is not None and p.dtype == torch.float32:
                    self._saved.append((p, p.data))
                    p.data = p.data.to(self.dtype)
            self.count += 1
        drop_graphs(self.module)
        return self

    def __exit__(self, *exc) -> None:
        for p, data in reversed(self._saved):
            p.data = data
        self._saved.clear()
        drop_graphs(self.module)
