"""Weight averages updated in multi-tensor operations: the reference's EMA with its decay ramp
(BEVDepth's ``MEGVIIEMAHook``) and mmdet's exponential-momentum EMA."""
import math
from typing import List

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

    def update_parameters(self, model: nn.Module) -> None:
        step = self.host_steps()
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        if step == 0:
            for key, avg in self.avg_parameters.items():
                avg.data.copy_(source[key].data)
        elif step % self.interval == 0:
            pairs = []
            for key, avg in self.avg_parameters.items():
                if avg.dtype in (torch.float32, torch.float64):
                    pairs.append((avg.data, source[key].data.to(avg.device)))
                elif avg.dtype.is_floating_point:
                    self.avg_func(avg.data, source[key].data.to(avg.device), step)
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
