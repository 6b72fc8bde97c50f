"""torch.profiler tables of streamed TrackOcc frames and the Python lines that make the
host wait for the device."""
import json
import os.path as osp
import traceback
import warnings
from typing import Callable, Dict, Optional

import torch

from ..evaluation.functional.occstq_summary import atomic_write_text
from ..utils.cuda_graph import graph_counts, graph_steady
from .precision import autocast
from .streaming import cap_live_tracks, synthetic_stream

_HERE = osp.dirname(osp.abspath(__file__))


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
    CUDA-graphed module replays (a new camera rig costs eager warm-up calls and a capture,
    which are not what a steady frame does), at most ``max_warmup_frames`` frames; the counters
    give ``warmup_frames`` and ``graph_captures_during_profile`` (0 unless the warm-up limit
    was hit). Returns the per-frame counters."""
    from torch.profiler import ProfilerActivity, profile
    model.eval()
    if stream is None:
        inputs, clip, frame = synthetic_stream(model)
    else:
        inputs, clip = stream
        frame = clip.video_data_samples[0]
    cuda = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    model.reset_tracks()
    frame.set_metainfo(dict(start_of_sequence=True))
    stream_frames(model, inputs, clip, dtype, device, 1, max_live_tracks, before_frame)
    frame.set_metainfo(dict(start_of_sequence=False))
    warmup = 1
    graphed = bool(graph_counts(model))
    while graphed and warmup < max_warmup_frames:
        before = graph_counts(model)
        stream_frames(model, inputs, clip, dtype, device, 1, max_live_tracks, before_frame)
        warmup += 1
        if graph_steady(before, graph_counts(model)):
            break
    before = graph_counts(model)
    with profile(activities=activities) as prof:
        stream_frames(model, inputs, clip, dtype, device, frames, max_live_tracks, before_frame)
    captures = sum(a['captures'] - before.get(n, dict(captures=0))['captures']
                   for n, a in graph_counts(model).items())
    events = prof.key_averages()
    counters = dict(profiled_frames=frames, warmup_frames=warmup,
                    graph_captures_during_profile=captures)
    if cuda:
        counters.update(_cuda_counters(prof, events, frames))
    parts = [f'# {frames} frames, per frame: {json.dumps(counters)}\n\n']
    if cuda:
        parts += ['## by self device time\n',
                  events.table(sort_by='self_cuda_time_total', row_limit=row_limit)]
    parts += ['\n\n## by self host time\n',
              events.table(sort_by='self_cpu_time_total', row_limit=row_limit)]
    if cuda:
        parts.append('\n\n## Python lines that synchronise (one frame)\n')
        try:
            sites = sync_sites(model, inputs, clip, dtype, device, max_live_tracks,
                               before_frame)
        except Exception as exc:  # noqa: BLE001  (the tables above stay useful)
            sites = {f'sync listing failed: {type(exc).__name__}: {exc}': 0}
        counters['sync_sites_per_frame'] = sum(sites.values())
        parts += [f'{count:4d}  {site}\n' for site, count in sites.items()]
    atomic_write_text(out_file, ''.join(parts))
    return counters


def _cuda_counters(prof, events, frames: int) -> Dict[str, float]:
    kernels = [e for e in prof.events() if getattr(e.device_type, 'name', '') == 'CUDA']
    counters = dict(kernels_per_frame=len(kernels) / frames,
                    kernel_ms_per_frame=sum(
                        getattr(e, 'device_time', None) or getattr(e, 'cuda_time', 0.0)
                        for e in kernels) / 1e3 / frames)
    by_name = {e.key: e for e in events}
    for name in ('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaMemcpyAsync',
                 'cudaLaunchKernel', 'cudaEventSynchronize'):
        if name in by_name:
            counters[f'{name}_per_frame'] = by_name[name].count / frames
            counters[f'{name}_ms_per_frame'] = by_name[name].cpu_time_total / 1e3 / frames
    return counters


def sync_sites(model, inputs, clip, dtype, device, max_live_tracks: int,
               before_frame: Optional[Callable[[], None]] = None) -> Dict[str, int]:
    """Stream one frame with ``torch.cuda.set_sync_debug_mode('warn')``; count the warnings
    by the innermost trackocc/mmdet/mmcv/mmengine source line (outside this package's
    analysis helpers) of the Python stack that raised them, most frequent first."""
    sites: Dict[str, int] = {}

    def record(message, category, filename, lineno, file=None, line=None):
        if 'synchroniz' not in str(message):
            return
        frames = [fr for fr in traceback.extract_stack()[:-1]
                  if any(k in fr.filename for k in ('trackocc', 'mmdet', 'mmcv', 'mmengine'))
                  and not osp.abspath(fr.filename).startswith(_HERE)]
        where = (f'{frames[-1].filename.split("site-packages/")[-1]}:{frames[-1].lineno} '
                 f'{frames[-1].line}' if frames else f'{filename}:{lineno}')
        sites[where] = sites.get(where, 0) + 1

    saved = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode('warn')
        try:
            with torch.no_grad(), autocast(device, dtype):
                if before_frame is not None:
                    before_frame()
                model.predict(inputs, [clip])
        finally:
            torch.cuda.set_sync_debug_mode('default')
            warnings.showwarning = saved
    cap_live_tracks(model, max_live_tracks)
    return dict(sorted(sites.items(), key=lambda kv: -kv[1]))
