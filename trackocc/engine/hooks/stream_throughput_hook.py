"""Frames per second of the streaming test loop, over all ranks (docs/benchmark.md)."""
import json
import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_gather_object, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from trackocc.registry import HOOKS

from ...evaluation.metrics.occstq_metric import iter_frames
from ...structures.sample_index import split_sample_idx
from ...utils.output_files import atomic_write_text, check_output_path


def frame_key(frame: Any) -> Tuple[Optional[int], Optional[int]]:
    """``(sequence_id, frame_idx)`` of a frame's metainfo (decoded from ``sample_idx`` when
    missing, as :class:`OccSTQMetric` does); ``(None, None)`` if it has neither."""
    meta = getattr(frame, 'metainfo', None) or {}
    seq_id, frame_idx = meta.get('sequence_id'), meta.get('frame_idx')
    if (seq_id is None or frame_idx is None) and meta.get('sample_idx') is not None:
        decoded = split_sample_idx(meta['sample_idx'])
        seq_id = decoded.sequence_id if seq_id is None else seq_id
        frame_idx = decoded.frame if frame_idx is None else frame_idx
    return (None if seq_id is None else int(seq_id),
            None if frame_idx is None else int(frame_idx))


@HOOKS.register_module()
class StreamThroughputHook(Hook):
    """Count the frames a test loop streams and time it; log one line at its end.

    Each rank counts the frames of its test-step outputs and reads the clock (after
    ``torch.cuda.synchronize()``) at the end of its ``warmup_iters``-th iteration and of its
    last one; the warm-up (lazy initialisation, autotuning, CUDA-graph capture) is not timed.
    After the loop the ranks' counts are gathered and

    - ``frames``: all frames streamed, summed over ranks (warm-up included);
    - ``seconds``: the longest timed window of a rank (the slowest rank ends the loop);
    - ``fps``: frames after the warm-up, summed over ranks, / ``seconds`` (NaN when no rank
      ran more than ``warmup_iters`` iterations).

    Rank 0 logs them; every rank writes them into the message hub (the info
    ``test/stream_frames``, the scalars ``test/stream_seconds`` and ``test/stream_fps``), so
    they end in the test's last log line and its JSON log (``stream_frames`` etc.).
    ``out_file`` (optional, written by rank 0) also gets the per-rank counts and the order in
    which each rank streamed its sequences: ``streams[r]`` is a list of runs
    ``[sequence_id, first frame_idx, number of frames]`` of consecutive frames.

    Priority NORMAL: after ``RuntimeInfoHook`` has put the metrics into the message hub, before
    ``LoggerHook`` writes the final test line. Validation loops are not counted.

    Args:
        warmup_iters (int): untimed iterations at the start of each rank's loop. Defaults to 1.
        out_file (str, optional): JSON file for the numbers above.
    """

    priority = 'NORMAL'

    def __init__(self, warmup_iters: int = 1, out_file: Optional[str] = None) -> None:
        if int(warmup_iters) < 0:
            raise ValueError(f'StreamThroughputHook: warmup_iters must be >= 0, got '
                             f'{warmup_iters}')
        self.warmup_iters = int(warmup_iters)
        self.out_file = None if out_file is None else check_output_path(
            out_file, 'StreamThroughputHook out_file')
        self._reset()

    def _reset(self) -> None:
        self._frames = 0
        self._timed_frames = 0
        self._start: Optional[float] = None
        self._end: Optional[float] = None
        self._num_iters: Optional[int] = None
        self._runs: List[List[Optional[int]]] = []

    @staticmethod
    def _clock() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the queued kernels of the frame belong to it
        return time.perf_counter()

    # ------------------------------------------------------------------ counting
    def before_test_epoch(self, runner) -> None:
        self._reset()
        try:
            self._num_iters = len(runner.test_dataloader)
        except TypeError:  # no length: read the clock after every iteration
            self._num_iters = None
        if self.warmup_iters == 0:
            self._start = self._clock()

    def after_test_iter(self, runner, batch_idx: int, data_batch: Any = None,
                        outputs: Optional[Sequence] = None) -> None:
        frames = list(iter_frames(outputs or []))
        for frame in frames:
            seq_id, frame_idx = frame_key(frame)
            last = self._runs[-1] if self._runs else None
            if (last is not None and last[0] == seq_id and frame_idx is not None
                    and last[1] is not None and frame_idx == last[1] + last[2]):
                last[2] += 1
            else:
                self._runs.append([seq_id, frame_idx, 1])
        self._frames += len(frames)
        done = batch_idx + 1
        if done <= self.warmup_iters:
            if done == self.warmup_iters:
                self._start = self._clock()
            return
        self._timed_frames += len(frames)
        if self._num_iters is None or done >= self._num_iters:
            self._end = self._clock()

    # ------------------------------------------------------------------ summary
    def summary(self) -> Dict[str, Any]:
        """Gather every rank's counts (a collective: all ranks call it) and summarise."""
        seconds = (self._end - self._start
                   if self._start is not None and self._end is not None else 0.0)
        mine = dict(frames=self._frames, timed_frames=self._timed_frames, seconds=seconds,
                    streams=self._runs)
        ranks = all_gather_object(mine) if get_world_size() > 1 else [mine]
        timed = sum(r['timed_frames'] for r in ranks)
        longest = max(r['seconds'] for r in ranks)
        return dict(world_size=len(ranks), frames=sum(r['frames'] for r in ranks),
                    timed_frames=timed, seconds=longest,
                    fps=timed / longest if timed and longest > 0 else math.nan,
                    warmup_iters=self.warmup_iters,
                    frames_per_rank=[r['frames'] for r in ranks],
                    seconds_per_rank=[r['seconds'] for r in ranks],
                    streams=[r['streams'] for r in ranks])

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        result = self.summary()
        hub = runner.message_hub
        hub.update_info('test/stream_frames', int(result['frames']))  # an int in the JSON log
        hub.update_scalar('test/stream_seconds', result['seconds'])
        hub.update_scalar('test/stream_fps', result['fps'])
        if is_main_process():
            print_log(f'StreamThroughputHook: {result["frames"]} frames streamed by '
                      f'{result["world_size"]} rank(s) {result["frames_per_rank"]}; '
                      f'{result["timed_frames"]} frames after {self.warmup_iters} warm-up '
                      f'iteration(s) per rank in {result["seconds"]:.3f} s: '
                      f'{result["fps"]:.2f} frames/s', logger='current')
            if self.out_file is not None:
                atomic_write_text(self.out_file, json.dumps(result, indent=1) + '\n')
        self._reset()
