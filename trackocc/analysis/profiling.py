"""torch.profiler tables of streamed TrackOcc frames or training iterations, and the Python
lines that make the host wait for the device."""
import json
import os.path as osp
import traceback
import warnings
from typing import Callable, Dict, Optional

import torch

from ..evaluation.functional.occstq_summary import atomic_write_text
from ..utils.compile_modules import compiled_graphs, has_compiled_modules
from ..utils.cuda_graph import graph_counts, graph_steady
from .precision import autocast
from .streaming import cap_live_tracks, synthetic_stream
from .training import train_iteration

_HERE = osp.dirname(osp.abspath(__file__))
# packages whose source lines a synchronisation is attributed to (the innermost such frame)
_SITE_PACKAGES = ('trackocc', 'mmdet', 'mmcv', 'mmengine')
# the start of the profiler's record of an optimizer step (torch.optim.Optimizer.step)
_OPTIMIZER_STEP = 'Optimizer.step#'


def stream_frames(model, inputs, clip, dtype, device, frames: int, max_live_tracks: int,
                  before_frame: Optional[Callable[[], None]] = None) -> None:
    """Call ``predict`` ``frames`` times on one clip (no gradients, autocast to ``dtype``),
    capping the live tracks after each frame; ``before_frame`` runs before each call (e.g.
    ``torch.compiler.cudagraph_mark_step_begin`` for compiled CUDA-graph trees)."""
    with torch.no_grad(), autocast(device, dtype):
        for _ in range(frames):
            if before_frame is not None:
                before_frame()
            model.predict(inputs, [clip])
            cap_live_tracks(model, max_live_tracks)


def profile_inference(model, device: torch.device, dtype, frames: int, out_file: str,
                      max_live_tracks: int = 64, row_limit: int = 40,
                      before_frame: Optional[Callable[[], None]] = None,
                      stream: Optional[tuple] = None, max_warmup_frames: int = 8) -> dict:
    """Write torch.profiler tables of ``frames`` streamed frames to ``out_file``: ops by
    device time and by host time and, on CUDA, per frame the kernel launches, summed kernel
    time and host-device synchronisations (``cudaStreamSynchronize``, device-to-host
    copies), and the Python lines that synchronise during one more frame (:func:`sync_sites`).

    ``stream``: ``(inputs, clip)`` of one real frame to stream repeatedly (e.g. a held-out
    frame, with ``max_live_tracks=0``); default the random-input stream of
    :func:`synthetic_stream`. Before the profiled frames the stream runs unprofiled until every
    CUDA-graphed module replays and ``torch.compile`` compiles nothing more (a new camera rig
    costs eager warm-up calls and a capture, a compiled module's first calls their compiles:
    not what a steady frame does), at most ``max_warmup_frames`` frames; the counters give
    ``warmup_frames``, ``graph_captures_during_profile`` and ``compiles_during_profile`` (0
    unless the warm-up limit was hit). Returns the per-frame counters."""
    from torch.profiler import profile
    model.eval()
    if stream is None:
        inputs, clip, frame = synthetic_stream(model)
    else:
        inputs, clip = stream
        frame = clip.video_data_samples[0]
    model.reset_tracks()
    frame.set_metainfo(dict(start_of_sequence=True))
    stream_frames(model, inputs, clip, dtype, device, 1, max_live_tracks, before_frame)
    frame.set_metainfo(dict(start_of_sequence=False))
    warmup = 1
    warm_up = bool(graph_counts(model)) or has_compiled_modules(model)
    while warm_up and warmup < max_warmup_frames:
        before, compiles = graph_counts(model), compiled_graphs()
        stream_frames(model, inputs, clip, dtype, device, 1, max_live_tracks, before_frame)
        warmup += 1
        if graph_steady(before, graph_counts(model)) and compiled_graphs() == compiles:
            break
    before, compiles = graph_counts(model), compiled_graphs()
    with profile(activities=_activities(device)) as prof:
        stream_frames(model, inputs, clip, dtype, device, frames, max_live_tracks, before_frame)
    captures = sum(a['captures'] - before.get(n, dict(captures=0))['captures']
                   for n, a in graph_counts(model).items())
    counters = dict(profiled_frames=frames, warmup_frames=warmup,
                    graph_captures_during_profile=captures,
                    compiles_during_profile=compiled_graphs() - compiles)
    return write_profile(
        out_file, prof, counters, frames, 'frame', device, row_limit,
        lambda: sync_sites(model, inputs, clip, dtype, device, max_live_tracks, before_frame))


def profile_training(model, device: torch.device, optim_wrapper, batch: dict, iters: int,
                     out_file: str, row_limit: int = 40,
                     before_iteration: Optional[Callable[[], None]] = None,
                     after_iteration: Optional[Callable[[dict], None]] = None) -> dict:
    """Write torch.profiler tables of ``iters`` training iterations (:func:`train_iteration`
    of ``batch`` with ``optim_wrapper``: preprocessing, forward, loss, backward, clipping,
    optimizer step) to ``out_file``, as :func:`profile_inference` does for frames: ops by
    device time (CUDA) and by host time, per-iteration counters and, on CUDA, the Python lines
    that synchronise during one more iteration (:func:`collect_sync_sites`; a synchronisation
    inside the backward pass is listed at the line that calls ``backward``).

    Run it after warm-up iterations (cuDNN autotuning, the AMP loss scale settling). Returns
    the counters: ``profiled_iterations``, ``optimizer_steps`` (optimizer steps the profiler
    recorded; an AMP step skipped for inf / NaN gradients has none) and on CUDA the
    ``*_per_iteration`` counters of :func:`profile_inference` and ``sync_sites_per_iteration``.
    The model's parameters are updated ``iters`` times (``iters + 1`` on CUDA).
    ``before_iteration`` runs before each iteration (CUDA-graph tree step marks),
    ``after_iteration`` after each with its log variables (the runner's log hook)."""
    from torch.profiler import profile
    if iters < 1:
        raise ValueError(f'profile_training: iters must be >= 1, got {iters}')
    model.train()

    def iteration():
        if before_iteration is not None:
            before_iteration()
        log_vars, _ = train_iteration(model, optim_wrapper, batch)
        if after_iteration is not None:
            after_iteration(log_vars)

    with profile(activities=_activities(device)) as prof:
        for _ in range(iters):
            iteration()
    steps = sum(e.count for e in prof.key_averages() if e.key.startswith(_OPTIMIZER_STEP))
    counters = dict(profiled_iterations=iters, optimizer_steps=steps)
    return write_profile(
        out_file, prof, counters, iters, 'iteration', device, row_limit,
        lambda: collect_sync_sites(iteration))


def _activities(device: torch.device) -> list:
    from torch.profiler import ProfilerActivity
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])


def write_profile(out_file: str, prof, counters: dict, steps: int, unit: str,
                  device: torch.device, row_limit: int,
                  sites: Callable[[], Dict[str, int]]) -> dict:
    """Write a profile of ``steps`` ``unit`` s (frames, iterations) to ``out_file`` atomically:
    a header with ``counters`` (updated on CUDA with the per-``unit`` kernel and
    synchronisation counters of ``prof``), the ops by self device time (CUDA) and by self
    host time (``row_limit`` rows each) and, on CUDA only, the synchronising Python lines that
    ``sites()`` returns (after the profile; its failure is written, not raised) with their
    total as ``sync_sites_per_<unit>``. Returns ``counters``."""
    cuda = device.type == 'cuda'
    events = prof.key_averages()
    if cuda:
        counters.update(_cuda_counters(prof, events, steps, unit))
    parts = [f'# {steps} {unit}s, per {unit}: {json.dumps(counters)}\n\n']
    if cuda:
        parts += ['## by self device time\n',
                  events.table(sort_by='self_cuda_time_total', row_limit=row_limit)]
    parts += ['\n\n## by self host time\n',
              events.table(sort_by='self_cpu_time_total', row_limit=row_limit)]
    if cuda:
        parts.append(f'\n\n## Python lines that synchronise (one {unit})\n')
        try:
            found = sites()
        except Exception as exc:  # noqa: BLE001  (the tables above stay useful)
            found = {f'sync listing failed: {type(exc).__name__}: {exc}': 0}
        counters[f'sync_sites_per_{unit}'] = sum(found.values())
        parts += [f'{count:4d}  {site}\n' for site, count in found.items()]
    atomic_write_text(out_file, ''.join(parts))
    return counters


def _cuda_counters(prof, events, steps: int, unit: str = 'frame') -> Dict[str, float]:
    kernels = [e for e in prof.events() if getattr(e.device_type, 'name', '') == 'CUDA']
    counters = {f'kernels_per_{unit}': len(kernels) / steps,
                f'kernel_ms_per_{unit}': sum(
                    getattr(e, 'device_time', None) or getattr(e, 'cuda_time', 0.0)
                    for e in kernels) / 1e3 / steps}
    by_name = {e.key: e for e in events}
    for name in ('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaMemcpyAsync',
                 'cudaLaunchKernel', 'cudaEventSynchronize'):
        if name in by_name:
            counters[f'{name}_per_{unit}'] = by_name[name].count / steps
            counters[f'{name}_ms_per_{unit}'] = by_name[name].cpu_time_total / 1e3 / steps
    return counters


def warning_sites(fn: Callable[[], object], match: str) -> Dict[str, int]:
    """Call ``fn()`` and count the warnings whose message contains ``match`` by the source
    line that raised them: the innermost frame of the Python stack in trackocc / mmdet / mmcv
    / mmengine outside this package's analysis helpers (``path:line code``), else the
    warning's own ``file:line``. Most frequent first; other warnings are shown as usual."""
    sites: Dict[str, int] = {}
    shown = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if match not in str(message):
            shown(message, category, filename, lineno, file, line)
            return
        frames = [fr for fr in traceback.extract_stack()[:-1]
                  if any(k in fr.filename for k in _SITE_PACKAGES)
                  and not osp.abspath(fr.filename).startswith(_HERE)]
        where = (f'{frames[-1].filename.split("site-packages/")[-1]}:{frames[-1].lineno} '
                 f'{frames[-1].line}' if frames else f'{filename}:{lineno}')
        sites[where] = sites.get(where, 0) + 1

    with warnings.catch_warnings():  # restores warnings.showwarning
        warnings.simplefilter('always')
        warnings.showwarning = record
        fn()
    return dict(sorted(sites.items(), key=lambda kv: -kv[1]))


def collect_sync_sites(fn: Callable[[], object]) -> Dict[str, int]:
    """Call ``fn()`` with ``torch.cuda.set_sync_debug_mode('warn')`` and count the
    host-device synchronisations it makes by source line (:func:`warning_sites`), most
    frequent first. Needs CUDA (the debug mode watches CUDA synchronisations only)."""
    if not torch.cuda.is_available():
        raise RuntimeError('collect_sync_sites: CUDA is not available (the synchronisation '
                           'debug mode watches CUDA synchronisations only)')
    torch.cuda.set_sync_debug_mode('warn')
    try:
        return warning_sites(fn, 'synchroniz')
    finally:
        torch.cuda.set_sync_debug_mode('default')


def sync_sites(model, inputs, clip, dtype, device, max_live_tracks: int,
               before_frame: Optional[Callable[[], None]] = None) -> Dict[str, int]:
    """The synchronising source lines of one streamed frame (:func:`collect_sync_sites` of
    ``predict``; the live-track cap after it is not watched)."""

    def one_frame():
        with torch.no_grad(), autocast(device, dtype):
            if before_frame is not None:
                before_frame()
            model.predict(inputs, [clip])

    sites = collect_sync_sites(one_frame)
    cap_live_tracks(model, max_live_tracks)
    return sites
