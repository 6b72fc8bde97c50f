"""Weight averaging with the decay ramp of the reference's EMA (BEVDepth's ``MEGVIIEMAHook``)."""
import math
from typing import List

import torch
import torch.nn as nn
from mmengine.model import ExponentialMovingAverage
from torch import Tensor

from trackocc.registry import MODELS

# tensors averaged per multi-tensor call: bounds the temporary ``source * (1 - d)`` copies
_FOREACH_CHUNK = 128


@MODELS.register_module()
class RampedDecayEMA(ExponentialMovingAverage):
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
        self._step_decay = self.decay_at(1)

    def decay_at(self, step: int) -> float:
        """Decay of the ``step``-th averaging step (1-based)."""
        return self.decay * (1.0 - math.exp(-(self.init_updates + step) / self.ramp_updates))

    def update_parameters(self, model: nn.Module) -> None:
        """As :meth:`BaseAveragedModel.update_parameters` (a copy at ``steps == 0``, then an
        average every ``interval`` updates; integer entries keep their copy), with one host
        read of the step counter per update and the average over all floating tensors in
        multi-tensor (``torch._foreach_*``) operations, ``_FOREACH_CHUNK`` float32 / float64
        tensors at a time: a few launches per update instead of three per tensor (the paper
        model averages 604), the same arithmetic as :meth:`avg_func` (half-precision
        tensors, whose scalar products round differently in the multi-tensor ops, go through
        :meth:`avg_func` one by one)."""
        step = int(self.steps)
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        if step == 0:
            for key, avg in self.avg_parameters.items():
                avg.data.copy_(source[key].data)
        elif step % self.interval == 0:
            self._step_decay = self.decay_at(step)
            pairs = []
            for key, avg in self.avg_parameters.items():
                if avg.dtype in (torch.float32, torch.float64):
                    pairs.append((avg.data, source[key].data.to(avg.device)))
                elif avg.dtype.is_floating_point:  # half types: their scalar rounding, per tensor
                    self.avg_func(avg.data, source[key].data.to(avg.device), step)
            for i in range(0, len(pairs), _FOREACH_CHUNK):
                avgs, sources = zip(*pairs[i:i + _FOREACH_CHUNK])
                self._average(list(avgs), list(sources), self._step_decay)
        if not self.update_buffers:  # buffers follow the source
            for b_avg, b_src in zip(self.module.buffers(), model.buffers()):
                b_avg.data.copy_(b_src.data.to(b_avg.device))
        self.steps += 1

    @staticmethod
    def _average(avgs: List[Tensor], sources: List[Tensor], decay: float) -> None:
        """:meth:`avg_func` on lists of tensors: ``avg <- avg * d + (source * (1 - d))``."""
        torch._foreach_mul_(avgs, decay)
        torch._foreach_add_(avgs, torch._foreach_mul(sources, 1.0 - decay))

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        """``avg <- d * avg + (1 - d) * source`` with the decay of this update (the
        reference's two in-place operations, in its order)."""
        decay = self._step_decay
        averaged_param.mul_(decay)
        averaged_param.add_(source_param * (1.0 - decay))
