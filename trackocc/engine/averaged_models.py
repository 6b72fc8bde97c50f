"""Weight averages updated in multi-tensor operations: the reference's EMA with its decay ramp
(BEVDepth's ``MEGVIIEMAHook``) and mmdet's exponential-momentum EMA."""
import math
import weakref
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmdet.models.layers import ExpMomentumEMA
from mmengine.model import ExponentialMovingAverage
from torch import Tensor

from trackocc.registry import MODELS

# tensors averaged per multi-tensor call: bounds the temporary copies of the sources
_FOREACH_CHUNK = 128


class MultiTensorUpdateMixin:
    """``update_parameters`` of a :class:`mmengine.model.BaseAveragedModel` (a copy at
    ``steps == 0``, then an average every ``interval`` updates; integer entries keep their
    copy; without ``update_buffers`` the buffers follow the source) with the step counter
    kept on the host (:meth:`host_steps`; MMEngine passes the device tensor ``steps`` to
    ``avg_func``, which a formula such as mmdet's ``float(1 + steps)`` reads once per tensor:
    a host wait per parameter on CUDA) and the float32 / float64 tensors averaged by
    :meth:`average` over lists of ``_FOREACH_CHUNK`` tensors (``torch._foreach_*``: a few
    launches per update instead of two or three per tensor). Half-precision tensors, whose
    scalar products round differently in the multi-tensor ops, go through ``avg_func`` one by
    one.

    Subclasses give :meth:`average`, the same arithmetic as their ``avg_func``."""

    def average(self, avgs: List[Tensor], sources: List[Tensor], step: int) -> None:
        raise NotImplementedError

    def host_steps(self) -> int:
        """``int(self.steps)``, read from the device only when the buffer was written or
        replaced by someone else since the last read or update (a checkpoint load, a hook's
        ``fill_``, a move to another device: the tensor or its version counter changed);
        otherwise the host's count, no device wait."""
        cached = getattr(self, '_host_steps', None)
        if cached is None or cached[0] is not self.steps or cached[1] != self.steps._version:
            cached = (self.steps, self.steps._version, int(self.steps))
            self._host_steps = cached
        return cached[2]

    def source_tensors(self, model: nn.Module) -> List[Tensor]:
        """``model``'s tensors for the keys of ``avg_parameters``, in their order: what
        ``model.state_dict()`` (``named_parameters()`` without ``update_buffers``) holds
        under those keys, read from the owning modules' ``_parameters`` / ``_buffers`` (the
        tensors there now, so a replaced tensor is seen). Which module owns each key is found
        again whenever ``model.modules()`` changed (a sub-module replaced); the paper model's
        ``state_dict()`` walks its ~480 modules with their hooks and detaches ~700 tensors
        at every update (1.3 ms of host time on the CPU, ``modules()`` 0.3 ms). A key that
        is no plain parameter or persistent buffer makes it read the state dict."""
        modules = list(model.modules())
        cached = getattr(self, '_source_slots', None)
        if cached is None or len(cached[0]) != len(modules) or any(
                ref() is not module for ref, module in zip(cached[0], modules)):
            # weak references: a copy of this average copies no source module
            cached = ([weakref.ref(m) for m in modules], self._find_slots(model, modules))
            self._source_slots = cached
        slots = cached[1]
        if slots is not None:
            return [getattr(modules[index], kind)[leaf] for index, kind, leaf in slots]
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        return [source[key] for key in self.avg_parameters]

    def _find_slots(self, model: nn.Module, modules: List[nn.Module]
                    ) -> Optional[List[Tuple[int, str, str]]]:
        """(index in ``modules``, ``'_parameters'`` or ``'_buffers'``, name) per key of
        ``avg_parameters``, or None where a key is none of them."""
        index = {id(m): i for i, m in enumerate(modules)}
        slots = []
        for key in self.avg_parameters:
            path, _, leaf = key.rpartition('.')
            try:
                module = model.get_submodule(path) if path else model
            except AttributeError:
                return None
            if module._parameters.get(leaf) is not None:
                slots.append((index[id(module)], '_parameters', leaf))
            elif (self.update_buffers and module._buffers.get(leaf) is not None
                  and leaf not in module._non_persistent_buffers_set):
                slots.append((index[id(module)], '_buffers', leaf))
            else:
                return None
        return slots

    def update_parameters(self, model: nn.Module) -> None:
        step = self.host_steps()
        sources = self.source_tensors(model)
        if step == 0:
            for avg, src in zip(self.avg_parameters.values(), sources):
                avg.data.copy_(src.data)
        elif step % self.interval == 0:
            pairs = []
            for avg, src in zip(self.avg_parameters.values(), sources):
                if avg.dtype in (torch.float32, torch.float64):
                    pairs.append((avg.data, src.data.to(avg.device)))
                elif avg.dtype.is_floating_point:
                    self.avg_func(avg.data, src.data.to(avg.device), step)
            for i in range(0, len(pairs), _FOREACH_CHUNK):
                avgs, sources = zip(*pairs[i:i + _FOREACH_CHUNK])
                self.average(list(avgs), list(sources), step)
        if not self.update_buffers:
            for b_avg, b_src in zip(self.module.buffers(), model.buffers()):
                b_avg.data.copy_(b_src.data.to(b_avg.device))
        self.steps += 1
        self._host_steps = (self.steps, self.steps._version, step + 1)


@MODELS.register_module()
class RampedDecayEMA(MultiTensorUpdateMixin, ExponentialMovingAverage):
    """Exponential moving average whose decay ramps up with the number of updates.

    The k-th averaging step (k = 1, 2, ...) uses

        decay_k = decay * (1 - exp(-(init_updates + k) / ramp_updates))
        avg <- decay_k * avg + (1 - decay_k) * source

    on every floating-point parameter and, with ``update_buffers=True``, every floating
    buffer (BN running mean / variance; integer buffers such as ``num_batches_tracked``
    keep the value of the copy). The reference (``decay=0.999``, ``init_updates=10560``,
    ramp 2000) starts at decay_1 = 0.99392 and tends to 0.999.

    As every :class:`mmengine.model.BaseAveragedModel`, the first ``update_parameters``
    call (``steps == 0``) copies the source; :class:`InitialWeightsEMAHook` makes that copy
    from the weights training starts with, so that the first optimizer step is already
    averaged with k = 1, as in the reference.

    Args:
        model (nn.Module): the model to average.
        decay (float): asymptotic decay, in (0, 1). Defaults to 0.999.
        init_updates (int): update count the ramp starts from. Defaults to 0.
        ramp_updates (float): time constant of the ramp, in updates. Defaults to 2000.
        interval (int): average every ``interval`` updates. Defaults to 1.
        device (torch.device, optional): where the averaged copy lives.
        update_buffers (bool): average the floating buffers too. Defaults to True.
    """

    def __init__(self,
                 model: nn.Module,
                 decay: float = 0.999,
                 init_updates: int = 0,
                 ramp_updates: float = 2000.0,
                 interval: int = 1,
                 device=None,
                 update_buffers: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f'RampedDecayEMA: decay must be in (0, 1), got {decay}')
        if init_updates < 0 or ramp_updates <= 0:
            raise ValueError('RampedDecayEMA: init_updates must be >= 0 and ramp_updates > 0, '
                             f'got {init_updates} and {ramp_updates}')
        super().__init__(model, momentum=1.0 - decay, interval=interval, device=device,
                         update_buffers=update_buffers)
        self.decay = float(decay)
        self.init_updates = int(init_updates)
        self.ramp_updates = float(ramp_updates)

    def decay_at(self, step: int) -> float:
        """Decay of the ``step``-th averaging step (1-based)."""
        return self.decay * (1.0 - math.exp(-(self.init_updates + step) / self.ramp_updates))

    def average(self, avgs: List[Tensor], sources: List[Tensor], step: int) -> None:
        """:meth:`avg_func` over lists: ``avg <- avg * d + (source * (1 - d))``."""
        decay = self.decay_at(step)
        torch._foreach_mul_(avgs, decay)
        torch._foreach_add_(avgs, torch._foreach_mul(sources, 1.0 - decay))

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        """``avg <- d * avg + (1 - d) * source`` with the decay of update ``steps`` (the
        reference's two in-place operations, in its order)."""
        decay = self.decay_at(int(steps))
        averaged_param.mul_(decay)
        averaged_param.add_(source_param * (1.0 - decay))


@MODELS.register_module()
class MultiTensorExpMomentumEMA(MultiTensorUpdateMixin, ExpMomentumEMA):
    """mmdet's :class:`ExpMomentumEMA` (momentum ``(1 - m) * exp(-(1 + k) / gamma) + m`` at
    update k, ``avg <- avg * (1 - momentum) + momentum * source``) updated in multi-tensor
    operations with one host read of the step counter (mmdet's reads it once per parameter).
    Same arguments and state."""

    def average(self, avgs: List[Tensor], sources: List[Tensor], step: int) -> None:
        momentum = (1 - self.momentum) * math.exp(-float(1 + step) / self.gamma) + self.momentum
        torch._foreach_mul_(avgs, 1 - momentum)
        torch._foreach_add_(avgs, sources, alpha=momentum)
