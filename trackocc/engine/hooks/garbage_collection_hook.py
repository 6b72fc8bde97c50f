"""Python's garbage collector on a schedule during training and testing (issue 16 items 3, 5).

CPython starts a collection whenever enough container objects have been allocated, so in a
loop bound by the host its pauses fall inside iterations. The young generations cost little
(the tiny config on the CPU: 8 collections in 8 training iterations, 3 ms in all); a full
collection walks every object the process holds, ~486 000 once the paper model is built,
222-237 ms on the 2-core CPU machine (0 ms for what was frozen). Full ones are rare in
steady training (few objects survive an iteration), but with data parallelism one rank's
pause stalls every rank at the next gradient all-reduce. One training iteration or one
streamed frame of the tiny model leaves no cyclic garbage behind (checked on the CPU), so the
collector can wait between iterations.

This hook collects once, freezes what exists then (the model, the modules, the configs: they
live until the end and need no scan; :func:`gc.freeze`), turns the automatic collector off for
the loop, and collects itself every ``interval`` iterations (the young generations) and every
``full_interval`` iterations (everything not frozen), so that cyclic garbage cannot pile up.
The state it found is restored when the loop ends.
"""
import gc
from typing import Optional

from mmengine.hooks import Hook

from trackocc.registry import HOOKS


def _is_count(value) -> bool:
    """An int >= 1 (no bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@HOOKS.register_module()
class GarbageCollectionHook(Hook):
    """Scheduled garbage collection in the train, val and test loops.

    Args:
        interval (int): iterations between collections of the generations up to
            ``generation``. Defaults to 100.
        generation (int): 0, 1 or 2, the generation collected every ``interval``
            iterations. Defaults to 1.
        full_interval (int, optional): iterations between full collections (every
            generation; objects frozen at the start are skipped). None: only at the end of
            the loop. Defaults to 1000.
        freeze (bool): :func:`gc.freeze` the objects that exist at the start of the loop
            (unfrozen at its end). Defaults to True.

    A val loop run inside training keeps the training's schedule (its iterations count in
    the same way; nothing is restored at its end). If a loop raises, its end is not reached
    and the collector stays off for the rest of the process (the command-line tools then
    exit).
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: int = 100, generation: int = 1,
                 full_interval: Optional[int] = 1000, freeze: bool = True) -> None:
        if not _is_count(interval):
            raise ValueError(f'GarbageCollectionHook: interval must be an int >= 1, got '
                             f'{interval!r}')
        if full_interval is not None and not _is_count(full_interval):
            raise ValueError(f'GarbageCollectionHook: full_interval must be None or an int >= '
                             f'1, got {full_interval!r}')
        if generation not in (0, 1, 2):
            raise ValueError(f'GarbageCollectionHook: generation must be 0, 1 or 2, got '
                             f'{generation!r}')
        self.interval = interval
        self.generation = generation
        self.full_interval = full_interval
        self.freeze = bool(freeze)
        self._owner: Optional[str] = None  # the loop that turned the collector off
        self._was_enabled = True
        self.collections = 0  # the scheduled collections made so far

    # -- the schedule -----------------------------------------------------------------
    def start(self, loop: str) -> None:
        """Collect, freeze and turn the automatic collector off, unless a loop already did
        (a val loop inside training)."""
        if self._owner is not None:
            return
        self._owner = loop
        self._was_enabled = gc.isenabled()
        gc.collect()
        if self.freeze:
            gc.freeze()
        gc.disable()

    def step(self, loop: str, done: int) -> None:
        """After ``done`` iterations of ``loop`` (counted from 1)."""
        if self._owner is None or loop != self._owner:
            return
        if self.full_interval is not None and done % self.full_interval == 0:
            gc.collect()
        elif done % self.interval == 0:
            gc.collect(self.generation)
        else:
            return
        self.collections += 1

    def stop(self, loop: str) -> None:
        """The loop that started the schedule ended: collect and restore the collector."""
        if self._owner != loop:
            return
        self._owner = None
        if self.freeze:
            gc.unfreeze()
        gc.collect()
        if self._was_enabled:
            gc.enable()

    # -- mmengine hook points ---------------------------------------------------------
    def before_train(self, runner) -> None:
        self.start('train')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.step('train', runner.iter + 1)

    def after_train(self, runner) -> None:
        self.stop('train')

    def before_val(self, runner) -> None:
        self.start('val')

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.step('val', batch_idx + 1)

    def after_val(self, runner) -> None:
        self.stop('val')

    def before_test(self, runner) -> None:
        self.start('test')

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.step('test', batch_idx + 1)

    def after_test(self, runner) -> None:
        self.stop('test')
