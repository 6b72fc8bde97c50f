"""MMEngine's ``RuntimeInfoHook`` without a host wait per training iteration (issue 16 item 3).

MMEngine's hook writes each iteration's log variables into the message hub as Python numbers,
``.item()`` by ``.item()``: the first read waits for the iteration's backward pass, so the host
cannot run ahead into the optimizer step, the weight average and the next iteration's launches
while the GPU finishes. This hook keeps them as tensors in a
:class:`~trackocc.engine.deferred_scalars.DeferredScalars` store and writes them into the hub,
in order and as the same numbers, where someone reads the hub: before the logger's iterations,
a checkpoint, a validation, and at the end of training (where the store is taken out).
"""
from typing import Optional

from mmengine.hooks import LoggerHook, RuntimeInfoHook
from mmengine.utils import apply_to

from trackocc.registry import HOOKS

from ..deferred_scalars import DeferredScalars


@HOOKS.register_module()
class HostSyncFreeRuntimeInfoHook(RuntimeInfoHook):
    """``RuntimeInfoHook`` whose training log variables reach the message hub in batches.

    The store is flushed after an iteration when a ``LoggerHook`` with ``interval`` n would
    log it (every n-th iteration, inner or global, and the last of an epoch or of training),
    before a checkpoint is written (the saved hub is made again from the flushed one) and
    before validation. The ``HostSyncFree*OptimWrapper`` s add the gradient norm to the same
    store. Everything else is MMEngine's hook.

    Args:
        interval (int, optional): flush every ``interval`` iterations. None (default): the
            interval of the runner's ``LoggerHook`` (1 without one: every iteration, as
            MMEngine's hook).
    """

    priority = 'VERY_HIGH'

    def __init__(self, interval: Optional[int] = None) -> None:
        if interval is not None and (not isinstance(interval, int) or isinstance(
                interval, bool) or interval < 1):
            raise ValueError(f'HostSyncFreeRuntimeInfoHook: interval must be an int >= 1 or '
                             f'None, got {interval!r}')
        self.interval = interval
        self.scalars: Optional[DeferredScalars] = None
        self._flush_every = 1

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self.scalars = DeferredScalars.install(runner.message_hub)
        loggers = [h for h in runner.hooks if isinstance(h, LoggerHook)]
        self._flush_every = self.interval or (loggers[0].interval if loggers else 1)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        for key, value in (outputs or {}).items():
            self.scalars.add(f'train/{key}', value)
        self.scalars.end_iteration()
        n = self._flush_every
        if (self.every_n_inner_iters(batch_idx, n) or self.every_n_train_iters(runner, n)
                or self.end_of_epoch(runner.train_dataloader, batch_idx)
                or self.is_last_train_iter(runner)):
            self.scalars.flush()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.scalars is not None and self.scalars.flush() and 'message_hub' in checkpoint:
            checkpoint['message_hub'] = apply_to(runner.message_hub.state_dict(),
                                                 lambda x: hasattr(x, 'cpu'),
                                                 lambda x: x.cpu())

    def before_val(self, runner) -> None:
        if self.scalars is not None:
            self.scalars.flush()
        super().before_val(runner)

    def after_train(self, runner) -> None:
        if self.scalars is not None:
            self.scalars.uninstall()
            self.scalars = None
        super().after_train(runner)
