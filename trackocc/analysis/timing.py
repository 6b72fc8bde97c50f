"""Timing on the device's timeline: CUDA events on a GPU, ``perf_counter`` on the CPU."""
import statistics
import time
from typing import Callable, Dict, List, Union

import torch

from ..utils.cuda_graph import CAPTURE_ERROR_MODE


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


def graph_replay_ms(fn: Callable[[], object], warmup: int, iters: int,
                    replays: int = 10) -> float:
    """Device milliseconds of one call of ``fn`` replayed from a CUDA graph: ``fn`` is run
    ``warmup`` times on a side stream, captured once, and each of ``iters`` samples times
    ``replays`` back-to-back replays; returns the median sample divided by ``replays``.

    The host launches one graph per replay, so this measures the kernels (and the gaps the
    device leaves between them), not Python, the autograd engine or kernel launches.
    ``fn`` must be capturable: no host synchronisation, no host-to-device copies.
    """
    if iters < 1 or replays < 1:
        raise ValueError(f'graph_replay_ms: iters and replays must be >= 1, got {iters}, '
                         f'{replays}')
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 1)):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
        fn()
    clock = DeviceClock('cuda')
    graph.replay()
    clock.sync()
    times = []
    for _ in range(iters):
        start = clock.mark()
        for _ in range(replays):
            graph.replay()
        end = clock.mark()
        clock.sync()
        times.append(clock.ms(start, end) / replays)
    return statistics.median(times)
