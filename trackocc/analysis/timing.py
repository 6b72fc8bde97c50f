"""Timing on the device's timeline: CUDA events on a GPU, ``perf_counter`` on the CPU."""
import statistics
import time
from typing import Callable, Dict, List, Union

import torch


class DeviceClock:
    """Marks on the device's timeline; ``ms`` gives the milliseconds between two marks.

    Args:
        device (torch.device | str): CUDA marks are events recorded on the current stream
            (call :meth:`sync` before :meth:`ms`); CPU marks are ``time.perf_counter()``.
    """

    def __init__(self, device: Union[torch.device, str]):
        self.cuda = torch.device(device).type == 'cuda'

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, start, end) -> float:
        """Milliseconds between two marks (after :meth:`sync` on CUDA)."""
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


def median_ms(fn: Callable[[], object], warmup: int, iters: int,
              device: Union[torch.device, str] = 'cuda') -> float:
    """Median milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones, each
    call timed alone (the device is synchronised after every call)."""
    if iters < 1:
        raise ValueError(f'median_ms: iters must be >= 1, got {iters}')
    clock = DeviceClock(device)
    for _ in range(warmup):
        fn()
    clock.sync()
    times = []
    for _ in range(iters):
        start = clock.mark()
        fn()
        end = clock.mark()
        clock.sync()
        times.append(clock.ms(start, end))
    return statistics.median(times)


def latency_summary(times_ms: List[float]) -> Dict[str, float]:
    """``mean_ms``, ``median_ms``, ``min_ms``, ``max_ms`` of a non-empty list of times."""
    if not times_ms:
        raise ValueError('latency_summary: no times')
    return dict(mean_ms=statistics.fmean(times_ms), median_ms=statistics.median(times_ms),
                min_ms=min(times_ms), max_ms=max(times_ms))
