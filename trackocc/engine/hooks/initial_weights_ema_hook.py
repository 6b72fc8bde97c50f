"""EMAHook whose average starts from the weights training starts with (the reference's EMA)."""
from mmengine.hooks import EMAHook

from trackocc.registry import HOOKS


@HOOKS.register_module()
class InitialWeightsEMAHook(EMAHook):
    """:class:`mmengine.hooks.EMAHook` that seeds the average with the initial weights.

    MMEngine builds the averaged copy in ``before_run``, before the runner initialises or
    loads the weights, so its first update copies the model *after* the first optimizer
    step. The reference's EMA (``MEGVIIEMAHook``) copied the model once the weights were
    initialised and loaded and averaged from the first step on. Here ``before_train``
    (after weight init and ``load_from``) copies the model into the average and counts that
    copy as its first update, so the first optimizer step is averaged with the averaged
    model's step 1 (e.g. :class:`RampedDecayEMA`'s decay_1). A resumed run (the average
    restored from the checkpoint, ``steps > 0``) is left as it is, and so is an EMA that
    starts later (``begin_iter`` / ``begin_epoch``). Everything else (averaging after each
    iteration, EMA weights for validation / test, checkpoints) is ``EMAHook``'s.

    Args: as :class:`mmengine.hooks.EMAHook`; e.g. ``ema_type='RampedDecayEMA'`` with its
    arguments.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.begin_iter or self.begin_epoch or int(self.ema_model.steps) != 0:
            return
        src = self.src_model.state_dict()
        for key, value in self.ema_model.module.state_dict().items():
            value.data.copy_(src[key].data)
        self.ema_model.steps.fill_(1)
