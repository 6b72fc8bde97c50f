"""Weight averaging with the decay ramp of the reference's EMA (BEVDepth's ``MEGVIIEMAHook``)."""
import math

import torch.nn as nn
from mmengine.model import ExponentialMovingAverage
from torch import Tensor

from trackocc.registry import MODELS


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
        # one host read of the step counter per update, not one per parameter
        self._step_decay = self.decay_at(int(self.steps))
        super().update_parameters(model)

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps) -> None:
        """``avg <- d * avg + (1 - d) * source`` with the decay of this update (the
        reference's two in-place operations, in its order)."""
        decay = self._step_decay
        averaged_param.mul_(decay)
        averaged_param.add_(source_param * (1.0 - decay))
