"""Timed training iterations of ``benchmark.py --train`` (one process or one data-parallel
rank): forward, backward + step and the EMA update per iteration, peak memory, and the
estimated time of the config's schedule."""
import contextlib
import statistics
import time
from typing import Callable, Optional

import torch

from ..structures.clip_data_sample import pin_data
from ..utils.synthetic_inputs import synthetic_batch
from .data_parallel import param_checksum, param_diff_to_rank0
from .gc_pauses import GCPauses
from .memory import peak_memory_stats, release_cached_memory, reset_peak_memory
from .profiling import profile_training
from .timing import DeviceClock, latency_summary
from .training import (build_ema_hook, build_gc_hook, build_runtime_info_hook,
                       build_train_optim_wrapper, train_iteration)


def schedule_estimate(cfg, iter_ms: float) -> dict:
    """``schedule_hours``: ``train_cfg.max_iters`` iterations of ``iter_ms`` each, with
    ``schedule_max_iters`` and ``schedule_gpus`` (``auto_scale_lr.base_batch_size``, one clip
    per GPU); {} without ``max_iters``."""
    max_iters = int(cfg.train_cfg.get('max_iters', 0) or 0)
    if not max_iters:
        return {}
    gpus = int(cfg.get('auto_scale_lr', {}).get('base_batch_size', 1) or 1)
    return dict(schedule_max_iters=max_iters, schedule_gpus=gpus,
                schedule_hours=max_iters * iter_ms / 1e3 / 3600.0)


def pins_batches(cfg, device: torch.device) -> bool:
    """Whether training batches reach the model in pinned memory: a CUDA device and the
    config's ``train_dataloader.pin_memory``."""
    return device.type == 'cuda' and bool((cfg.get('train_dataloader') or {})
                                          .get('pin_memory', False))


def time_training(cfg, model, device: torch.device, dtype, iters: int, warmup: int,
                  clip_len: int = 3, profile_file: Optional[str] = None,
                  profile_iters: int = 5, data_parallel: bool = False,
                  with_ema: bool = True, with_gc_hook: bool = True,
                  before_iteration: Optional[Callable[[], None]] = None) -> dict:
    """``warmup + iters`` training iterations on one synthetic clip of ``clip_len`` frames,
    each followed, as in the runner, by the config's ``default_hooks.runtime_info`` putting
    the log variables into the message hub (:func:`build_runtime_info_hook`;
    ``runtime_info_hook`` names it, ``log_ms`` its mean time: MMEngine's reads each on the
    host, ``HostSyncFreeRuntimeInfoHook`` every logger interval), the config's EMA update
    (``with_ema`` and an EMA hook
    in ``custom_hooks``: :func:`build_ema_hook`; ``ema`` names it, ``ema_ms`` its mean time,
    included in ``iter_time``) and its scheduled garbage collection (``with_gc_hook`` and
    ``default_hooks.garbage_collection``: :func:`build_gc_hook`, started before the first
    iteration, stopped after the last; ``gc_hook``: its settings or None, ``gc_hook_ms`` its
    mean time); ``gc``: the collections Python made during the timed iterations and their
    pauses (:class:`GCPauses`); with ``profile_file``, ``profile_iters`` more iterations
    profiled by :func:`profile_training` (its counters as ``profile``; without the EMA and
    with the automatic collector). The clip is pinned (images and ground truth) when the
    config's training DataLoader pins its batches on a CUDA device (``pinned_batch``), as
    that DataLoader hands them over. ``before_iteration`` runs before each iteration, profiled
    ones included (e.g. ``torch.compiler.cudagraph_mark_step_begin`` for the CUDA-graph trees
    of ``torch.compile(mode='reduce-overhead')``).

    Nothing here waits for the device between iterations (the runner does not either, unless
    a hook reads a tensor): the host may prepare an iteration while the device finishes the
    one before. ``iter_time`` is each iteration's span on the device's timeline (CUDA events
    read after the loop), ``wall_ms_per_iter`` the timed window's wall-clock time per
    iteration (the device idle at its start, synchronised at its end); the optimizer wrapper
    is the config's family (``optim_wrapper``).

    ``data_parallel``: ``model`` is this rank's ``MMDistributedDataParallel``; the clip's
    images are seeded by the rank, and the result (this rank's) also has the parameter
    checksum before and after the iterations and the largest parameter difference to rank 0
    after them (:mod:`trackocc.analysis.data_parallel`)."""
    from mmengine.model import is_model_wrapper
    model.train()
    optim_wrapper = build_train_optim_wrapper(cfg, model, dtype)
    rank = torch.distributed.get_rank() if data_parallel else 0
    batch = synthetic_batch(model.module if is_model_wrapper(model) else model, clip_len,
                            with_gt=True, seed=rank)
    pinned = pins_batches(cfg, device)
    if pinned:  # as the DataLoader's pin-memory thread gives it to the runner
        batch = pin_data(batch)
    ema = build_ema_hook(cfg, model, warmup + iters) if with_ema else None
    gc_hook = build_gc_hook(cfg) if with_gc_hook else None
    log_hook, log_runner = build_runtime_info_hook(cfg, warmup + iters)
    clock = DeviceClock(device)
    marks, losses_seen = [], []
    checks = {}
    if data_parallel:
        checks['param_checksum_start'] = param_checksum(model)
    release_cached_memory(device)
    pauses = GCPauses()
    with contextlib.ExitStack() as scope:  # the schedule and the recording end with the loop
        if gc_hook is not None:
            gc_hook.start('train')
            scope.callback(gc_hook.stop, 'train')
        for i in range(warmup + iters):
            if i == warmup:
                clock.sync()  # the timed window starts with an idle device
                reset_peak_memory(device)
                scope.enter_context(pauses)
                start = time.perf_counter()
            if before_iteration is not None:
                before_iteration()
            log_vars, iteration_marks = train_iteration(model, optim_wrapper, batch, clock.mark)
            # the runner's order after an iteration: its log variables into the message hub
            # (a host read of each with MMEngine's hook, none with HostSyncFreeRuntimeInfoHook
            # until the logger's iteration), the EMA hook, then the garbage collection hook;
            # nothing else waits for the device, so the host may run ahead into the next one
            log_runner.iter = i
            log_hook.after_train_iter(log_runner, i, outputs=log_vars)
            iteration_marks.append(clock.mark())
            if ema is not None:
                hook, runner = ema
                runner.iter = i
                hook.after_train_iter(runner, i)
            iteration_marks.append(clock.mark() if ema is not None else iteration_marks[-1])
            if gc_hook is not None:
                gc_hook.step('train', i + 1)
            iteration_marks.append(clock.mark() if gc_hook is not None else iteration_marks[-1])
            if i >= warmup:
                marks.append(iteration_marks)
                losses_seen.append(torch.as_tensor(log_vars['loss']).detach())
        clock.sync()
        wall_ms = (time.perf_counter() - start) * 1e3 / iters
    fwd, bwd, log_ms, ema_ms, gc_ms, total = (
        [clock.ms(m[a], m[b]) for m in marks]
        for a, b in ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 5)))
    losses_seen = [float(v) for v in losses_seen]
    out = dict(iters=iters, warmup=warmup, clip_frames=clip_len, pinned_batch=pinned,
               iter_time=latency_summary(total), wall_ms_per_iter=wall_ms,
               forward_ms=statistics.fmean(fwd), backward_step_ms=statistics.fmean(bwd),
               runtime_info_hook=type(log_hook).__name__, log_ms=statistics.fmean(log_ms),
               optim_wrapper=type(optim_wrapper).__name__,
               ema=type(ema[0].ema_model).__name__ if ema is not None else None,
               ema_ms=statistics.fmean(ema_ms), gc_hook_ms=statistics.fmean(gc_ms),
               loss_first=losses_seen[0],
               loss_last=losses_seen[-1],
               gc_hook=None if gc_hook is None else dict(
                   interval=gc_hook.interval, generation=gc_hook.generation,
                   full_interval=gc_hook.full_interval, freeze=gc_hook.freeze),
               gc=pauses.summary(iters), **peak_memory_stats(device))
    if data_parallel:  # a collective: every rank's parameters against rank 0's
        log_hook.after_train(log_runner)
        out.update(rank=rank, device=str(device), **checks,
                   param_checksum=param_checksum(model),
                   param_max_abs_diff_to_rank0=param_diff_to_rank0(model))
        return out
    out.update(schedule_estimate(cfg, out['iter_time']['mean_ms']))
    if profile_file is not None:  # after the timed iterations and the peak memory

        def log_iteration(log_vars: dict) -> None:  # as in the timed iterations
            log_runner.iter += 1
            log_hook.after_train_iter(log_runner, log_runner.iter, outputs=log_vars)

        out['profile'] = profile_training(model, device, optim_wrapper, batch, profile_iters,
                                          profile_file, before_iteration=before_iteration,
                                          after_iteration=log_iteration)
    log_hook.after_train(log_runner)  # HostSyncFreeRuntimeInfoHook: flushed, taken out
    return out
