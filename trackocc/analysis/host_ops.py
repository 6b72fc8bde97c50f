"""The ops a frame dispatches outside its stage modules: the host's glue between a TrackOcc
frame's sub-networks, which no CUDA graph or ``torch.compile`` of those sub-networks covers.

On a host that bounds the frame each such op costs a launch and its Python; counting them on
any device (a count, the same on every machine) says how much of a frame could still be
replayed as graphs, and where the rest comes from."""
import collections
import traceback
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .stages import STAGES, stage_modules

# where an op comes from: the innermost frame of the first of these packages on the stack
SOURCE_PACKAGES = ('trackocc', 'mmdet3d', 'mmdet', 'mmcv', 'mmengine')


def _source_line(packages: Sequence[str] = SOURCE_PACKAGES) -> str:
    """``package/path:line function`` of the innermost caller inside the first of
    ``packages`` that is on the stack (this package's ``analysis`` left out: the counter and
    the benchmark's helpers), else ``'?'``."""
    stack = list(reversed(traceback.extract_stack()))
    for package in packages:
        key = f'/{package}/'
        for frame in stack:
            path = frame.filename.replace('\\', '/')
            if key in path and f'/{package}/analysis/' not in path:
                return f'{package}/{path.rsplit(key, 1)[1]}:{frame.lineno} {frame.name}'
    return '?'


class HostOpCounter(TorchDispatchMode):
    """Counts the ATen ops dispatched while it is on, split into those inside a call of one of
    the model's stage modules (:data:`~trackocc.analysis.stages.STAGES`, forward hooks) and
    those outside, which it attributes to their source line (``where=True``) and op.

    Use as ``with HostOpCounter(model) as c: model.predict(...)``; then ``c.outside``,
    ``c.inside``, ``c.by_line`` and ``c.by_op`` (:class:`collections.Counter`), ``c.summary()``.
    Ops of the counter's own hooks are not counted.
    """

    def __init__(self, model: torch.nn.Module, stages=STAGES, where: bool = True):
        super().__init__()
        self.modules = [m for mods in stage_modules(model, stages).values() for _, m in mods]
        if not self.modules:
            raise ValueError(f'HostOpCounter: {type(model).__name__} has none of the stage '
                             'modules')
        self.where = where
        self.inside = 0
        self.outside = 0
        self.by_line: collections.Counter = collections.Counter()
        self.by_op: collections.Counter = collections.Counter()
        self._depth = 0
        self._handles: List = []

    def _enter_stage(self, *_) -> None:
        self._depth += 1

    def _leave_stage(self, *_) -> None:
        self._depth -= 1

    def __enter__(self):
        self._depth = 0
        for module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._enter_stage))
            self._handles.append(module.register_forward_hook(self._leave_stage))
        return super().__enter__()

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self._depth > 0:
            self.inside += 1
        else:
            self.outside += 1
            self.by_op[str(func)] += 1
            if self.where:
                self.by_line[_source_line()] += 1
        return func(*args, **(kwargs or {}))

    def summary(self, top: Optional[int] = 20) -> Dict[str, object]:
        """``outside``, ``inside``, ``outside_share`` and the ``top`` source lines and ops
        outside the stage modules, most ops first."""
        total = self.inside + self.outside
        return dict(outside=self.outside, inside=self.inside,
                    outside_share=self.outside / total if total else 0.0,
                    lines=dict(self.by_line.most_common(top)),
                    ops=dict(self.by_op.most_common(top)))
