"""A stand-in for ``torch.cuda.CUDAGraph`` on any device: the ATen ops of one call, replayed.

A CUDA graph records the kernels of a call and replays them on the same memory: each replay
reads the tensors the capture read (static inputs, parameters, cached buffers) where they lie
and writes its results where the capture's outputs lie; the Python code of the call runs only
at the capture, so host state it changes (a counter, a list) changes once, and anything the
host decided at the capture (a branch on a value, a Python scalar) is frozen into the graph.

:class:`RecordedGraph` reproduces those semantics with a ``TorchDispatchMode``: :meth:`capture`
runs the call once, eagerly, and records each ATen op with the tensors it read and wrote, then
puts back what it wrote in place into tensors from before the call (a capture runs no kernel);
:meth:`replay` runs the recorded ops again on the same tensor objects, copying each op's fresh
results into the tensors the capture returned (views and in-place ops write where they wrote).
A value the host read during the capture (``int(t)``, a branch on a tensor) stays what it was
then, as it does on a GPU for tensors kept on the host; an op whose result changes shape at a
replay raises. It is slow (every op through Python) and meant for tests:
:class:`~trackocc.utils.cuda_graph.CUDAGraphModule` with ``emulate=True`` uses it, so that what
a graph changes in a model's results (state kept on the host, inputs mutated in place, outputs
overwritten by the next replay) shows on a CPU. A tensor from before the capture that the graph
reads is held weakly: a replay after it was freed raises (on a GPU it would read whatever took
its memory). What it cannot see: kernels run outside the dispatcher (a pybind extension writing
through raw pointers), memory reuse inside the graph's pool, and host synchronisations, which a
capture on a GPU refuses for device tensors (every tensor is on one device here).

CPU tensors only: over CUDA tensors an emulated replay of the tracking's graphs indexed out of
range on an H200 (2026-12-03; the cause was not found), so a capture refuses them.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Dict, List, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

# ops whose tensor argument is a constant the Python code made (torch.tensor(...)): kept
_CONSTANT_OPS = frozenset({'lift_fresh', 'lift_fresh_copy'})


class _External:
    """A tensor from before the capture that the graph reads, held weakly: on a GPU the
    graph reads its memory, which the allocator hands out again once the tensor is freed. A
    view is held as its base and its geometry."""

    __slots__ = ('ref', 'geometry')

    def __init__(self, x: torch.Tensor):
        base = x._base if x._base is not None else x
        self.ref = weakref.ref(base)
        self.geometry = None if base is x else (x.size(), x.stride(), x.storage_offset())

    def resolve(self, func) -> torch.Tensor:
        base = self.ref()
        if base is None:
            raise RuntimeError(
                f'RecordedGraph: {func} reads a tensor from before the capture that has been '
                'freed since (a CUDA graph would read whatever reuses its memory); keep it '
                'alive as long as the graph, e.g. as a module attribute or a static input')
        return base if self.geometry is None else base.as_strided(*self.geometry)


class _RecordedOp(NamedTuple):
    func: Any  # an OpOverload
    args: tuple
    kwargs: dict
    fresh: List[torch.Tensor]  # the call's non-aliasing tensor results, in return order


def _op_name(func) -> str:
    return func._schema.name.split('::')[-1]


def _fresh_outputs(func, out) -> List[torch.Tensor]:
    """The tensors among ``out`` that the op allocated (returns without alias annotation):
    replays copy their new values there. Views and in-place results alias an argument, which
    the replayed op writes itself."""
    returns = func._schema.returns
    outs = out if isinstance(out, (tuple, list)) and len(returns) != 1 else (out, )
    fresh = []
    for ret, value in zip(returns, outs):
        if ret.alias_info is not None:
            continue
        fresh.extend(x for x in tree_flatten(value)[0] if isinstance(x, torch.Tensor))
    return fresh


def _written_arguments(func, args, kwargs) -> List[torch.Tensor]:
    """The tensors an op writes in place (schema arguments annotated as written)."""
    written = []
    for i, arg in enumerate(func._schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        written.extend(x for x in tree_flatten(value)[0] if isinstance(x, torch.Tensor))
    return written


class _Recorder(TorchDispatchMode):
    """Records the ops of a call; what they write in place into memory from before the call
    is restored afterwards (:meth:`undo`): a capture on a GPU runs no kernel."""

    def __init__(self, ops: List[_RecordedOp]):
        super().__init__()
        self.ops = ops
        self._created = set()  # storages the recorded call allocated
        self._produced: Dict[int, torch.Tensor] = {}  # id -> every tensor an op returned
        self._saved: List[tuple] = []  # (tensor written in place, its value before)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for x in tree_flatten((args, kwargs))[0]:
            if isinstance(x, torch.Tensor) and x.device.type != 'cpu':
                raise RuntimeError(f'RecordedGraph: {func} got a tensor on {x.device}; the '
                                   'emulation is for CPU tensors only (see the module '
                                   'docstring)')
        for x in _written_arguments(func, args, kwargs):
            if x.untyped_storage().data_ptr() not in self._created:
                self._saved.append((x, x.clone()))
        out = func(*args, **kwargs)
        fresh = _fresh_outputs(func, out)
        self._created.update(x.untyped_storage().data_ptr() for x in fresh)
        self._produced.update((id(x), x) for x in tree_flatten(out)[0]
                              if isinstance(x, torch.Tensor))
        self.ops.append(_RecordedOp(func, args, kwargs, fresh))
        return out

    def hold_outside_tensors_weakly(self) -> None:
        """Replace, in the recorded arguments, each tensor that no recorded op returned (made
        before the capture: static inputs, parameters, caches) by an :class:`_External`."""
        def weak(x):
            if isinstance(x, torch.Tensor) and id(x) not in self._produced:
                return _External(x)
            return x

        for i, op in enumerate(self.ops):
            if _op_name(op.func) not in _CONSTANT_OPS:
                self.ops[i] = op._replace(args=tree_map(weak, op.args),
                                          kwargs=tree_map(weak, op.kwargs))
        self._produced.clear()

    def undo(self) -> None:
        """Put back what the recorded call wrote into memory it did not allocate."""
        for x, before in reversed(self._saved):
            x.copy_(before)
        self._saved.clear()


class RecordedGraph:
    """The ATen ops of one captured call, replayed on the tensors they touched (see the module
    docstring). Used like ``torch.cuda.CUDAGraph`` with ``torch.cuda.graph``::

        graph = RecordedGraph()
        with graph.capture():
            out = module(*static_inputs)   # runs once, eagerly, recorded
        ...                                # write new values into static_inputs
        graph.replay()                     # out holds the new call's results
    """

    def __init__(self):
        self._ops: List[_RecordedOp] = []
        self.captured = False

    @contextmanager
    def capture(self):
        if self.captured:
            raise RuntimeError('RecordedGraph: captured already')
        recorder = _Recorder(self._ops)
        with torch.no_grad():
            with recorder:
                yield self
            recorder.undo()
            recorder.hold_outside_tensors_weakly()
        self.captured = True

    @property
    def num_ops(self) -> int:
        """ATen ops recorded (what a replay runs)."""
        return len(self._ops)

    def replay(self) -> None:
        if not self.captured:
            raise RuntimeError('RecordedGraph: replay before capture')
        with torch.no_grad():
            for op in self._ops:
                def resolve(x, func=op.func):
                    return x.resolve(func) if isinstance(x, _External) else x

                out = op.func(*tree_map(resolve, op.args), **tree_map(resolve, op.kwargs))
                for old, new in zip(op.fresh, _fresh_outputs(op.func, out)):
                    if old.shape != new.shape:
                        raise RuntimeError(
                            f'RecordedGraph: {op.func} returned shape {tuple(new.shape)} at a '
                            f'replay, {tuple(old.shape)} at the capture (a data-dependent '
                            'shape, which a CUDA graph cannot replay)')
                    old.copy_(new)
