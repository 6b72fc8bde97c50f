"""Python garbage-collector pauses during timed code (``benchmark.py --train``'s ``gc``)."""
import gc
import time
from typing import Dict, List, Optional


class GCPauses:
    """Context manager: the collections CPython makes inside the block, by generation, and
    their pauses (:data:`gc.callbacks`; scheduled ones made by
    :class:`~trackocc.engine.hooks.GarbageCollectionHook` count too).

    ``summary(iterations)``: ``collections`` per generation, ``pause_ms`` in all, the longest
    ``max_pause_ms``, and both per iteration."""

    def __init__(self) -> None:
        self.pauses: Dict[int, List[float]] = {0: [], 1: [], 2: []}
        self._start: Optional[float] = None

    def _callback(self, phase: str, info: dict) -> None:
        if phase == 'start':
            self._start = time.perf_counter()
        elif self._start is not None:
            self.pauses[info['generation']].append(time.perf_counter() - self._start)
            self._start = None

    def __enter__(self) -> 'GCPauses':
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self, iterations: int) -> dict:
        every = [p for pauses in self.pauses.values() for p in pauses]
        total_ms = 1e3 * sum(every)
        return dict(collections={str(g): len(p) for g, p in self.pauses.items()},
                    pause_ms=total_ms, max_pause_ms=1e3 * max(every, default=0.0),
                    pause_ms_per_iteration=total_ms / max(iterations, 1),
                    full_collections_per_iteration=len(self.pauses[2]) / max(iterations, 1))
