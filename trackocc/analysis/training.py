"""One training iteration as ``tools/analysis_tools/benchmark.py --train`` times and profiles it:
the config's optimizer wrapper and the iteration body (preprocess, loss, parse, update)."""
from typing import Any, Callable, List, Optional, Tuple

import torch


def build_train_optim_wrapper(cfg, model, dtype):
    """The config's optimizer, clipping and param-wise settings (``cfg.optim_wrapper``) as an
    AMP wrapper with ``dtype`` (float16 / bfloat16, dynamic loss scale) or a full-precision one
    for ``dtype=None``, of the config's family (``HostSyncFree*OptimWrapper`` or MMEngine's;
    :data:`~trackocc.engine.optim_wrappers.AMP_OPTIM_WRAPPERS`)."""
    from mmengine.optim import build_optim_wrapper

    from trackocc.engine.optim_wrappers import AMP_OPTIM_WRAPPERS
    ow = cfg.optim_wrapper.copy()
    for key in ('loss_scale', 'dtype'):
        ow.pop(key, None)
    full = {amp: plain for plain, amp in AMP_OPTIM_WRAPPERS.items()}
    plain = full.get(ow.get('type'), ow.get('type'))
    if plain not in AMP_OPTIM_WRAPPERS:  # another wrapper: MMEngine's
        plain = 'OptimWrapper'
    if dtype is None:
        ow['type'] = plain
    else:
        ow.update(type=AMP_OPTIM_WRAPPERS[plain], loss_scale='dynamic',
                  dtype='float16' if dtype == torch.float16 else 'bfloat16')
    return build_optim_wrapper(model, ow)


def build_runtime_info_hook(cfg, max_iters: int):
    """The config's ``default_hooks.runtime_info`` (MMEngine's ``RuntimeInfoHook`` without
    one), which writes each iteration's log variables into the message hub, set up as the
    runner sets it up (``before_train``) with a stand-in runner whose ``iter`` the caller sets
    before each ``hook.after_train_iter(runner, iter, outputs=log_vars)``; the runner's
    ``hooks`` hold a ``LoggerHook`` with the config's interval (default 50), whose logging
    iterations a :class:`~trackocc.engine.hooks.HostSyncFreeRuntimeInfoHook` flushes at.
    Returns ``(hook, runner)``."""
    import types

    from mmengine.hooks import LoggerHook
    from mmengine.logging import MessageHub

    from trackocc.registry import HOOKS
    hooks_cfg = cfg.get('default_hooks', None) or {}
    hook_cfg = dict(hooks_cfg.get('runtime_info') or dict(type='RuntimeInfoHook'))
    hook_cfg.pop('priority', None)
    hook = HOOKS.build(hook_cfg)
    interval = (hooks_cfg.get('logger') or {}).get('interval', 50)
    runner = types.SimpleNamespace(
        message_hub=MessageHub.get_current_instance(), iter=0, epoch=0, max_iters=max_iters,
        max_epochs=1, hooks=[LoggerHook(interval=interval)],
        train_dataloader=_Sized(max_iters + 1))  # no epoch ends inside the timed run
    hook.before_train(runner)
    return hook, runner


class _Sized:
    """A stand-in training DataLoader: a length and no data set meta information."""

    def __init__(self, length: int):
        self.length = length
        self.dataset = None

    def __len__(self) -> int:
        return self.length


def build_ema_hook(cfg, model, max_iters: int):
    """The config's weight-averaging hook (the first ``custom_hooks`` entry whose class is an
    :class:`mmengine.hooks.EMAHook`, e.g. ``InitialWeightsEMAHook``) set up on ``model`` as the
    runner sets it up (``before_run``, ``before_train``), with a stand-in runner whose
    ``iter`` the caller sets before each ``hook.after_train_iter(runner, iter)``. Returns
    ``(hook, runner)``, or ``None`` when the config averages no weights."""
    import types

    from mmengine.hooks import EMAHook

    from trackocc.registry import HOOKS  # trackocc's hooks, then mmdet3d's and MMEngine's
    for entry in cfg.get('custom_hooks', None) or []:
        hook_cfg = dict(entry)
        hook_cfg.pop('priority', None)
        cls = HOOKS.get(hook_cfg['type']) if isinstance(hook_cfg['type'], str) \
            else hook_cfg['type']
        if isinstance(cls, type) and issubclass(cls, EMAHook):
            hook = HOOKS.build(hook_cfg)
            runner = types.SimpleNamespace(model=model, iter=0, epoch=0, max_iters=max_iters,
                                           max_epochs=1)
            hook.before_run(runner)
            hook.before_train(runner)
            return hook, runner
    return None


def build_gc_hook(cfg):
    """The config's ``default_hooks.garbage_collection`` (a
    :class:`~trackocc.engine.hooks.GarbageCollectionHook`: Python's collector on a schedule,
    as the runner runs it), or ``None`` when the config has none."""
    entry = (cfg.get('default_hooks', None) or {}).get('garbage_collection')
    if not entry:
        return None
    from trackocc.registry import HOOKS
    hook_cfg = dict(entry)
    hook_cfg.pop('priority', None)
    return HOOKS.build(hook_cfg)


def train_iteration(model, optim_wrapper, batch: dict,
                    mark: Optional[Callable[[], Any]] = None) -> Tuple[dict, List[Any]]:
    """One iteration of ``model.train_step``'s body on ``batch`` (a collated data batch):
    ``data_preprocessor`` and ``model(mode='loss')`` inside ``optim_wrapper.optim_context``
    (autocast for AMP), ``parse_losses``, then ``optim_wrapper.update_params`` (backward,
    gradient clipping, optimizer step, zero grad).

    ``model`` may be a model wrapper (``MMDistributedDataParallel``): as its ``train_step``,
    the wrapped module preprocesses and parses while the forward goes through the wrapper
    (whose backward hooks all-reduce the gradients).

    ``mark`` is called before the forward, after ``parse_losses`` and after the update (e.g.
    :meth:`DeviceClock.mark`). Returns ``(log_vars, marks)``; nothing here waits for the
    device (``log_vars`` are tensors)."""
    from mmengine.model import is_model_wrapper
    module = model.module if is_model_wrapper(model) else model
    marks = [mark()] if mark is not None else []
    with optim_wrapper.optim_context(model):
        data = module.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
    parsed, log_vars = module.parse_losses(losses)
    if mark is not None:
        marks.append(mark())
    optim_wrapper.update_params(parsed)
    if mark is not None:
        marks.append(mark())
    return log_vars, marks
