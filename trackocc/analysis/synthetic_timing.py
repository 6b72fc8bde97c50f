"""The timed synthetic stream of ``benchmark.py`` without ``--data-root``: random frames of one
rig (:mod:`.streaming`) through ``TrackOcc.predict``, the live tracks capped, with FPS,
latency, per-stage times and peak memory (the held-out counterpart:
:mod:`.held_out_stream`)."""
import statistics
from typing import Callable, Optional

import torch

from .memory import peak_memory_stats, release_cached_memory, reset_peak_memory
from .precision import autocast
from .stages import StageTimer, mean_stage_ms
from .streaming import cap_live_tracks, move_to_frame, synthetic_stream
from .timing import DeviceClock, latency_summary


def stream_synthetic(model, device: torch.device, dtype, frames: int, warmup: int,
                     max_live_tracks: int = 64,
                     before_frame: Optional[Callable[[], None]] = None) -> dict:
    """Stream ``warmup + frames`` frames through ``predict`` (live tracks capped at
    ``max_live_tracks``, see ``cap_live_tracks``); statistics of the last ``frames``.
    ``before_frame`` runs before each frame (CUDA-graph tree step marks)."""
    model.eval()
    inputs, clip, frame = synthetic_stream(model)
    clock = DeviceClock(device)
    timer = StageTimer(model, clock)
    model.reset_tracks()
    release_cached_memory(device)
    totals, stages, live = [], [], []
    try:
        for i in range(warmup + frames):
            if i == warmup:  # cuDNN autotuning workspaces of the warm-up are not counted
                reset_peak_memory(device)
            move_to_frame(frame, i)
            timer.reset()
            start = clock.mark()
            with torch.no_grad(), autocast(device, dtype):
                if before_frame is not None:
                    before_frame()
                model.predict(inputs, [clip])
            end = clock.mark()
            per_stage = timer.collect()
            num_live = cap_live_tracks(model, max_live_tracks)
            if i >= warmup:
                totals.append(clock.ms(start, end))
                stages.append(per_stage)
                live.append(num_live)
    finally:
        timer.remove()
    mean_total = statistics.fmean(totals)
    pred = frame.pred_occ
    return dict(frames=frames, warmup=warmup, max_live_tracks=max_live_tracks,
                fps=1000.0 / mean_total, latency=latency_summary(totals),
                stage_ms=mean_stage_ms(stages, totals), mean_live_tracks=statistics.fmean(live),
                occupied_voxels_last_frame=int((pred.semantics != model.num_classes - 1).sum()),
                **peak_memory_stats(device))
