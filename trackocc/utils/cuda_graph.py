"""Inference-time CUDA graphs of a sub-network, without torch.compile.

:class:`CUDAGraphModule` wraps a module whose inference forward launches the same kernels for
the same input shapes and never synchronises with the host (the image backbone, the view
transformer once its bev_pool ranks are cached, the volume and occupancy encoders once the
camera-query plan is cached). After ``warmup`` eager calls with one input signature it
captures one call into a :class:`torch.cuda.CUDAGraph`; later calls with that signature copy
their tensors into the captured inputs and replay the graph: one launch instead of hundreds
of kernels and their Python overhead.

The signature is the structure of the arguments, every tensor's shape / dtype / device,
every non-tensor value (e.g. a geometry key, an image shape) and the autocast state. One graph
is kept: a call with another signature drops it and starts over (eager warm-up calls, then a
new capture; ``rekey_warmup`` sets how many warm-up calls a new signature gets once the wrapper
has captured before, down to none). That keeps the graph consistent with what the module
caches between calls (the bev_pool ranks, the camera-query plan), which is keyed by values of
the signature: those caches are only rebuilt by eager calls (the capture's own eager run
included), after which the graph is captured again. Training
mode, autograd and CPU tensors always run the module eagerly.

Arguments and outputs may hold mmengine data elements (the tracker's ``TrackInstances``): their
fields are graph inputs / outputs like other tensors (:func:`to_tree`), and each call returns
new elements, so a caller may set their fields.

Returned tensors belong to the graph: the next replay of the same signature overwrites them.
A streaming detector that consumes a frame's features within the frame can use them as they
are; keep a ``clone()`` of anything that must outlive the next call.

Chained graphs read each other's outputs in place: an argument that lies in the output of
another wrapper's current graph (the backbone's features passed to the neck) is captured as it
is instead of being cloned into a static input, so each replay of the upstream graph leaves
the next frame's input where the downstream graph reads it, with no device-to-device copy.
A call whose argument moved to another wrapper's output (the upstream warms up and captures
again) drops the graph and captures again, since copying into another graph's output could
overwrite what that graph's other readers still need; a call whose argument comes from no
wrapper (a fresh tensor, e.g. the tracks of a sequence start) runs a second graph of the same
signature that copies its inputs, captured at the first such call and kept beside the first.
A parameter passed as an argument (the learned query embedding the tracker's query interaction
gets) is read in place too, as the module's own weights are, and so is a tensor marked with
:func:`mark_static_input` (a camera rig's inputs, rewritten in place at a new rig:
:class:`~trackocc.utils.rig_inputs.RigInputs`).

An upstream wrapper with ``stable_output`` returns every call's output (eager warm-up calls,
the captured graph's replays) in buffers of its own that stay at one address
(:class:`StableOutputs`, one device copy per output tensor, captured in the graph): the
graphs downstream then keep theirs when it warms up and captures again, e.g. at each new
camera rig, where only the rig-dependent modules need new graphs.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.structures import BaseDataElement
from torch.utils._pytree import tree_flatten, tree_unflatten

from .recorded_graph import RecordedGraph


# sub-networks of TrackOcc that launch the same kernels every frame of a camera rig without a
# host synchronisation once their per-rig caches (bev_pool ranks, camera-query plan) are filled
DETECTOR_GRAPH_MODULES = ('img_backbone', 'img_neck', 'img_view_transformer',
                          'volume_encoder_backbone', 'volume_encoder_neck', 'occ_encoder')
# the graphed sub-networks whose per-rig caches (bev_pool ranks, camera-query plan) make them
# warm up and capture again at each new camera rig: with stable outputs the graphs after them
# keep theirs (FastInferenceHook's default)
RIG_GRAPH_MODULES = ('img_view_transformer', 'occ_encoder')
# the decoder / head: its input shapes are fixed only by a query budget (TrackOcc.query_budget)
HEAD_GRAPH_MODULE = 'pts_bbox_head'
# the panoptic merge (TrackOcc.panoptic_merge): fixed shapes only under a query budget too
MERGE_GRAPH_MODULE = 'panoptic_merge'
BUDGET_GRAPH_MODULES = (HEAD_GRAPH_MODULE, MERGE_GRAPH_MODULE)
# the tracking (TrackInstances in and out): fixed shapes only with TrackOcc.fixed_track_rows;
# 'track_carry' runs the memory bank and the query interaction inside it (with the glue
# between them and the ego alignment), so it is graphed instead of them, not with them;
# 'track_settle' (the tracker's update after the head) runs the panoptic merge inside it
TRACKING_GRAPH_MODULES = ('memory_bank', 'query_interaction', 'track_carry', 'track_settle')
# graph name -> the graphable modules it calls (a graph cannot replay inside another's capture)
CALLS_GRAPH_MODULES = {'track_carry': ('memory_bank', 'query_interaction'),
                       'track_settle': (MERGE_GRAPH_MODULE, )}


_DATA_ELEMENT = '__data_element__'


def to_tree(x):
    """``x`` with every mmengine data element (e.g. the tracker's ``TrackInstances``) replaced
    by a tuple ``(marker, class, metainfo items, sorted field names, field values)`` that
    ``tree_flatten`` walks into, so its tensors become graph inputs / outputs like any other;
    :func:`from_tree` builds the elements again."""
    if isinstance(x, BaseDataElement):
        # sorted: the fields are a set in mmengine, whose order depends on its history, so
        # two elements with the same fields may list them differently (another signature)
        keys = tuple(sorted(x.keys()))
        meta = tuple(sorted(x.metainfo_items(), key=lambda item: item[0]))
        return (_DATA_ELEMENT, type(x), meta, keys, tuple(to_tree(x.get(k)) for k in keys))
    if type(x) in (list, tuple):
        return type(x)(to_tree(v) for v in x)
    if type(x) is dict:
        return {k: to_tree(v) for k, v in x.items()}
    return x


def from_tree(x):
    """The inverse of :func:`to_tree`: new data elements holding the same values."""
    if type(x) is tuple and len(x) == 5 and x[0] is _DATA_ELEMENT:
        _, cls, meta, keys, values = x
        element = cls(metainfo=dict(meta))
        for key, value in zip(keys, values):
            element.set_field(from_tree(value), key)
        return element
    if type(x) in (list, tuple):
        return type(x)(from_tree(v) for v in x)
    if type(x) is dict:
        return {k: from_tree(v) for k, v in x.items()}
    return x


def named_tensors(x, prefix: str = 'output'):
    """``(name, tensor)`` for each tensor of a nested output: data-element fields, dict keys,
    list / tuple positions (e.g. ``output[0].obj_idxes``)."""
    if isinstance(x, torch.Tensor):
        yield prefix, x
    elif isinstance(x, BaseDataElement):
        for key in sorted(x.keys()):
            yield from named_tensors(x.get(key), f'{prefix}.{key}')
    elif isinstance(x, dict):
        for key, value in x.items():
            yield from named_tensors(value, f'{prefix}[{key!r}]')
    elif isinstance(x, (list, tuple)):
        for i, value in enumerate(x):
            yield from named_tensors(value, f'{prefix}[{i}]')


_STATIC_INPUT = '_trackocc_static_graph_input'


def mark_static_input(x: torch.Tensor) -> torch.Tensor:
    """Mark ``x`` as an input that stays at its address and is rewritten in place between
    calls when its value changes (e.g. a camera rig's bev_pool ranks): a
    :class:`CUDAGraphModule` given it as an argument reads it where it lies, as it does a
    parameter, instead of copying it into a static input at every replay. Returns ``x``."""
    setattr(x, _STATIC_INPUT, True)
    return x


def is_static_input(x: torch.Tensor) -> bool:
    """Whether ``x`` was marked with :func:`mark_static_input`."""
    return getattr(x, _STATIC_INPUT, False)


class StableOutputs:
    """Buffers that hold a module's latest output at the same addresses from call to call.

    :meth:`write` copies the tensors of an output into the buffers (allocated at the first
    call, and again only when the output's structure, shapes, dtypes or strides change) and
    returns the output with the buffers in place of its tensors; non-tensor leaves are passed
    through. A :class:`CUDAGraphModule` with ``stable_output`` writes every call's output here,
    its captured graph included (the copies are captured with it), so a graph downstream that
    reads these buffers in place keeps its graph when this module warms up and captures again
    (e.g. at a new camera rig)."""

    def __init__(self):
        self._key: Optional[tuple] = None
        self._buffers: List[Optional[torch.Tensor]] = []
        self.storages: FrozenSet[int] = frozenset()
        self.allocations = 0

    @staticmethod
    def _key_of(leaves: list, spec) -> tuple:
        return (str(spec), ) + tuple(
            (tuple(x.shape), x.dtype, x.device, x.stride()) if isinstance(x, torch.Tensor)
            else None for x in leaves)

    def ensure(self, output) -> None:
        """Allocate buffers for ``output``'s tensors unless the current ones match it."""
        self._ensure(*tree_flatten(to_tree(output)))

    def _ensure(self, leaves: list, spec) -> None:
        key = self._key_of(leaves, spec)
        if key == self._key:
            return
        self._buffers = [torch.empty_strided(x.shape, x.stride(), dtype=x.dtype,
                                             device=x.device)
                         if isinstance(x, torch.Tensor) else None for x in leaves]
        self._key = key
        self.storages = frozenset(_storage_ptr(b) for b in self._buffers if b is not None)
        self.allocations += 1

    def write(self, output, allocate: bool = True):
        """``output`` copied into the buffers; returns it with the buffers in its place.
        ``allocate=False`` (inside a graph capture): a RuntimeError instead of allocating."""
        leaves, spec = tree_flatten(to_tree(output))
        if not allocate and self._key_of(leaves, spec) != self._key:
            raise RuntimeError('StableOutputs: the captured call returned other shapes than '
                               'its eager run')
        self._ensure(leaves, spec)
        for buf, x in zip(self._buffers, leaves):
            if buf is not None:
                buf.copy_(x)
        return from_tree(tree_unflatten([x if buf is None else buf
                                         for buf, x in zip(self._buffers, leaves)], spec))


_capture_stream: Optional[torch.cuda.Stream] = None  # of keep_memory captures, made lazily
# A capture restricts the CUDA calls of the capturing thread only. In CUDA's default ('global')
# mode a call from any other thread that may synchronise, e.g. the DataLoader's pin-memory
# thread allocating pinned host memory for the next batch (``pin_memory=True``), invalidates
# the capture and leaves that thread with the error: a test loop that captured at a new camera
# rig while a batch was being pinned died (pinned_batch_h200_2026-12-04, pin2). Those threads
# never use the capture stream, so nothing of theirs belongs in the graph.
CAPTURE_ERROR_MODE = 'thread_local'


@contextmanager
def _capture_keeping_memory(graph: torch.cuda.CUDAGraph, pool=None):
    """``torch.cuda.graph(graph, pool)`` without what it does first to free memory for the
    graph: a device synchronisation, emptying the caching allocator's device cache (every
    later eager allocation that the cache held must go to ``cudaMalloc`` again) and the pinned
    host cache. The capture stream waits for the current one instead."""
    global _capture_stream
    if _capture_stream is None:
        _capture_stream = torch.cuda.Stream()
    _capture_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(_capture_stream):
        graph.capture_begin(pool, capture_error_mode=CAPTURE_ERROR_MODE)
        try:
            yield
        finally:
            graph.capture_end()


class _Captured(NamedTuple):
    key: tuple
    graph: torch.cuda.CUDAGraph
    inputs: List[torch.Tensor]  # static input tensors, in leaf order
    aliased: List[bool]  # per static input: another graph's output, read in place
    output: Any  # in :func:`to_tree` form
    output_storages: FrozenSet[int]  # data pointers of the output tensors' storages


def _copy_with_strides(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` with its strides. ``clone()`` makes a non-dense tensor (a slice)
    contiguous: a compiled module in the eager run before a capture would then see other
    strides than in the capture and compile again inside it, where inductor's autotuning
    synchronises and invalidates the capture (seen on an H200). Overlapping tensors (an
    expand) are cloned."""
    if torch._debug_has_internal_overlap(x) == 1:  # 0: none, 2: not known
        return x.clone()
    try:
        return torch.empty_strided(x.size(), x.stride(), dtype=x.dtype,
                                   device=x.device).copy_(x)
    except RuntimeError:  # an overlap the check could not tell
        return x.clone()


def _storage_ptr(x: torch.Tensor) -> int:
    return x.untyped_storage().data_ptr()


class CUDAGraphModule(nn.Module):
    """Replays CUDA graphs of ``module``'s inference forward (see the module docstring).

    Args:
        module (nn.Module): the wrapped sub-network (its parameters stay where they are).
        warmup (int): eager calls of a signature before capturing it (lazy initialisation,
            cuDNN autotuning, caches filled by the first calls). Default 2.
        pool: memory-pool handle (``torch.cuda.graph_pool_handle()``) of the captures;
            default a private one. Share one only between graphs that are always captured
            and replayed in the same order.
        stable_output (bool): return every call's output in :class:`StableOutputs` buffers
            (one more device copy per output tensor, captured in the graph) so that graphs
            reading it downstream are not captured again when this one is. Default False.
        rekey_warmup (int, optional): eager calls of a new signature once this wrapper has
            captured before (e.g. a new camera rig: the kernels are initialised and tuned
            already, and the capture runs the module once eagerly before recording, which
            fills the caches keyed by the signature); 0 captures at the signature's first
            call. Default None: ``warmup``.
        emulate (bool): capture :class:`~trackocc.utils.recorded_graph.RecordedGraph` s
            instead of CUDA graphs, for CPU tensors: the graphs' semantics (static inputs,
            outputs rewritten by each replay, host code run at the capture only) on a CPU, for
            tests. Default False.
        keep_memory (bool): capture without ``torch.cuda.graph``'s preparation (a device
            synchronisation, the allocator's device and pinned host caches emptied), which
            each capture pays again, e.g. at every new camera rig. Default False (the
            preparation, as ``torch.cuda.graph``).
    """

    def __init__(self, module: nn.Module, warmup: int = 2, pool=None,
                 stable_output: bool = False, rekey_warmup: Optional[int] = None,
                 emulate: bool = False, keep_memory: bool = False):
        super().__init__()
        if warmup < 1:
            raise ValueError(f'CUDAGraphModule: warmup must be >= 1, got {warmup}')
        self.module = module
        self.train(module.training)
        self.warmup = warmup
        self.rekey_warmup = rekey_warmup
        self.emulate = emulate
        self.keep_memory = keep_memory
        self._pool = pool
        self._captured: Optional[_Captured] = None
        self._copied: Optional[_Captured] = None  # the signature's graph with copied inputs
        self._warmup_storages: FrozenSet[int] = frozenset()  # the last warm-up call's output
        self._pending: Optional[tuple] = None  # signature being warmed up, eager calls
        self._pending_calls = 0
        self.replays = self.captures = 0
        self.eager_calls = 0  # inference calls run eagerly (warm-up, or not graphable)
        self.aliased_inputs = 0  # static inputs of the current graph read in place
        self._stable: Optional[StableOutputs] = StableOutputs() if stable_output else None
        # debugging: after each replay run the module eagerly on copies of the call's
        # arguments and record (replay, output name, max abs difference) where they differ
        # (the module's host side effects then happen twice a call)
        self.verify = False
        self.mismatches: List[tuple] = []
        CUDAGraphModule._wrappers.add(self)

    @property
    def stable_output(self) -> bool:
        """Whether outputs are returned in :class:`StableOutputs` buffers; setting it drops
        the graph (its output lies elsewhere)."""
        return self._stable is not None

    @stable_output.setter
    def stable_output(self, on: bool) -> None:
        if bool(on) != self.stable_output:
            self._stable = StableOutputs() if on else None
            self.drop()

    @property
    def rekey_warmup(self) -> Optional[int]:
        """Eager calls of a new signature after a first capture (None: ``warmup``)."""
        return self._rekey_warmup

    @rekey_warmup.setter
    def rekey_warmup(self, calls: Optional[int]) -> None:
        self._rekey_warmup = check_rekey_warmup(calls, 'CUDAGraphModule: rekey_warmup')

    def _warmup_calls(self) -> int:
        """Eager calls of the pending signature before its capture."""
        if self.captures == 0 or self._rekey_warmup is None:
            return self.warmup
        return self._rekey_warmup

    # every wrapper alive, to find whose graph output an argument lies in
    _wrappers: 'weakref.WeakSet[CUDAGraphModule]' = weakref.WeakSet()

    def _graph_output(self, x: torch.Tensor) -> bool:
        """Whether ``x`` lies in the output of another wrapper's current graph (it stays at
        that address while that graph lives: each replay rewrites it there) or in another
        wrapper's stable output buffers (rewritten there by every call)."""
        ptr = _storage_ptr(x)
        for other in list(CUDAGraphModule._wrappers):
            if other is self:
                continue
            entry = other._captured
            if entry is not None and ptr in entry.output_storages:
                return True
            if other._stable is not None and ptr in other._stable.storages:
                return True
        return False

    def _signature(self, leaves: list, spec) -> Optional[tuple]:
        """Hashable signature of the flattened arguments; None if they cannot be graphed (no
        tensor, or one off the GPU unless emulated)."""
        parts = [str(spec)]
        on_cuda = False
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                if leaf.device.type != 'cuda' and not self.emulate:
                    return None
                on_cuda = True
                parts.append(('T', tuple(leaf.shape), leaf.dtype, leaf.device.index,
                              leaf.stride()))
            else:
                try:
                    hash(leaf)
                except TypeError:
                    return None
                parts.append(('V', leaf))
        if not on_cuda:
            return None
        amp = (torch.is_autocast_enabled('cuda'), torch.get_autocast_dtype('cuda'))
        return tuple(parts) + (amp, )

    def __getattr__(self, name: str):
        """Attributes the wrapper lacks are the wrapped module's (e.g. ``input_size``)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__('module'), name)

    def forward(self, *args, **kwargs):
        if self.module.training or torch.is_grad_enabled():
            return self.module(*args, **kwargs)
        leaves, spec = tree_flatten(to_tree((args, kwargs)))
        key = self._signature(leaves, spec)
        if key is None:
            self.eager_calls += 1
            return self.module(*args, **kwargs)
        entry = self._captured
        if entry is None or entry.key != key:
            self._captured = self._copied = entry = None  # another signature: drop the graphs
            if self._pending != key:
                self._pending, self._pending_calls = key, 0
            self._pending_calls += 1
            if self._pending_calls <= self._warmup_calls():
                self.eager_calls += 1
                output = self.module(*args, **kwargs)
                if self._stable is not None:
                    return self._stable.write(output)
                self._warmup_storages = frozenset(
                    _storage_ptr(x) for x in tree_flatten(to_tree(output))[0]
                    if isinstance(x, torch.Tensor))
                return output
            entry = self._captured = self._capture(key, leaves, spec)
            self._warmup_storages = frozenset()
            self.captures += 1
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        moved = self._moved(entry, tensors)
        if moved and not any(self._upstream_output(x) for x in moved):
            # read in place from another graph's output so far, these inputs come from
            # elsewhere this call: the signature's second graph, which copies its inputs
            if self._copied is None:
                self._copied = self._capture(key, leaves, spec, in_place=False)
                self.captures += 1
            entry = self._copied
            moved = self._moved(entry, tensors)
        if moved:  # in another wrapper's output (it captures again), or a parameter replaced
            self.drop()
            return self.forward(*args, **kwargs)
        before = [x.clone() if isinstance(x, torch.Tensor) and not x.requires_grad else x
                  for x in leaves] if self.verify else None
        for static, x in zip(entry.inputs, tensors):
            if static.data_ptr() != x.data_ptr():
                static.copy_(x)
        entry.graph.replay()
        self.replays += 1
        output = from_tree(entry.output)  # new containers: a caller may set their fields
        if before is not None:
            self._check_replay(before, spec, output)
        return output

    def _check_replay(self, leaves: list, spec, output) -> None:
        """``verify``: the module's eager output for the call's arguments (``leaves``, copied
        before the replay) against the replay's; differing tensors are recorded in
        :attr:`mismatches`."""
        args, kwargs = from_tree(tree_unflatten(leaves, spec))
        want = dict(named_tensors(self.module(*args, **kwargs)))
        for name, got in named_tensors(output):
            ref = want.get(name)
            if ref is None or ref.shape != got.shape or ref.dtype != got.dtype:
                self.mismatches.append((self.replays, name, 'shape/dtype/missing'))
            elif not torch.equal(ref, got):
                diff = (ref.double() - got.double()).abs().nan_to_num(float('inf'))
                self.mismatches.append((self.replays, name, float(diff.max())))

    def drop(self) -> None:
        """Forget the captured graph and any warm-up in progress (e.g. after the wrapped
        module's parameters were replaced: a graph reads the tensors it was captured with);
        the next calls warm up and capture again. The counters stay."""
        self._captured = self._copied = None
        self._pending, self._pending_calls = None, 0

    def _upstream_output(self, x: torch.Tensor) -> bool:
        """Whether ``x`` lies in another wrapper's graph output (:meth:`_graph_output`) or in
        the output of its latest eager warm-up call (an upstream about to capture)."""
        if self._graph_output(x):
            return True
        ptr = _storage_ptr(x)
        return any(ptr in other._warmup_storages for other in list(CUDAGraphModule._wrappers)
                   if other is not self)

    @staticmethod
    def _moved(entry: _Captured, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """The arguments that ``entry``'s graph reads in place and that are not where it
        reads them."""
        return [x for static, x, alias in zip(entry.inputs, tensors, entry.aliased)
                if alias and static.data_ptr() != x.data_ptr()]

    def _read_in_place(self, x: torch.Tensor) -> bool:
        """Whether the graph reads argument ``x`` where it lies instead of a static copy:
        another graph's output (:meth:`_graph_output`) or a parameter passed as an argument
        (``requires_grad`` under ``no_grad``, e.g. a learned query embedding handed to the
        tracker), which stays at its address as the module's own weights do, and a tensor
        marked with :func:`mark_static_input`."""
        return x.requires_grad or is_static_input(x) or self._graph_output(x)

    def _capture(self, key: tuple, leaves: list, spec, in_place: bool = True) -> _Captured:
        """Capture one call; ``in_place=False``: every argument but parameters copied into a
        static input (the signature's second graph)."""
        static = [(x if x.requires_grad or (in_place and self._read_in_place(x))
                   else x.clone()) if isinstance(x, torch.Tensor) else x for x in leaves]
        aliased = [a is b for a, b in zip(static, leaves) if isinstance(a, torch.Tensor)]
        if in_place:
            self.aliased_inputs = sum(aliased)
        args, kwargs = from_tree(tree_unflatten(static, spec))
        # the eager run before the capture gets copies of what the graph reads in place: a
        # module that updates an input in place (the memory bank's save countdown) would
        # otherwise update it twice this call, once eagerly and once by the replay
        warm_args, warm_kwargs = from_tree(tree_unflatten(
            [_copy_with_strides(x) if isinstance(x, torch.Tensor) and x is leaf
             and not x.requires_grad else x for x, leaf in zip(static, leaves)], spec))
        amp_enabled = torch.is_autocast_enabled('cuda')
        amp_dtype = torch.get_autocast_dtype('cuda')
        # the autocast weight-cast cache must stay off while capturing: a cast cached before
        # the capture would be read by every replay after the autocast region freed it
        with torch.autocast('cuda', dtype=amp_dtype, enabled=amp_enabled, cache_enabled=False):
            if self.emulate:
                eager = self.module(*warm_args, **warm_kwargs)
            else:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # one eager run on the capture stream first
                    eager = self.module(*warm_args, **warm_kwargs)
                torch.cuda.current_stream().wait_stream(side)
            if self._stable is not None:  # allocated on the main stream, before the capture
                self._stable.ensure(eager)
            del eager, warm_args, warm_kwargs
            graph = RecordedGraph() if self.emulate else torch.cuda.CUDAGraph()
            if self.emulate:
                recording = graph.capture()
            elif self.keep_memory:
                recording = _capture_keeping_memory(graph, self._pool)
            else:
                recording = torch.cuda.graph(graph, pool=self._pool,
                                             capture_error_mode=CAPTURE_ERROR_MODE)
            with recording:
                output = self.module(*args, **kwargs)
                if self._stable is not None:  # the copies are part of the graph
                    output = self._stable.write(output, allocate=False)
        output = to_tree(output)
        storages = frozenset(_storage_ptr(x) for x in tree_flatten(output)[0]
                             if isinstance(x, torch.Tensor))
        return _Captured(key, graph, [x for x in static if isinstance(x, torch.Tensor)], aliased,
                         output, storages)


def check_rekey_warmup(calls: Optional[int], what: str) -> Optional[int]:
    """``calls`` if it is None or an int >= 0 (:attr:`CUDAGraphModule.rekey_warmup`), else a
    ValueError naming ``what``."""
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int)
                              or calls < 0):
        raise ValueError(f'{what} must be None or an int >= 0, got {calls!r}')
    return calls


def check_graph_names(names, owner: str) -> None:
    """ValueError (from ``owner``) when ``names`` holds a graph together with a graphable
    module it calls (:data:`CALLS_GRAPH_MODULES`)."""
    for outer, inner in CALLS_GRAPH_MODULES.items():
        both = [n for n in inner if n in names]
        if outer in names and both:
            raise ValueError(f"{owner}: '{outer}' calls {both}: graph either it or them "
                             '(a graph does not replay inside the capture of another)')


def graph_modules(model: nn.Module, names, warmup: int = 2,
                  stable_outputs: Sequence[str] = (),
                  rekey_warmup: Optional[int] = None, emulate: bool = False,
                  keep_memory: bool = False) -> List[str]:
    """Wrap each named sub-module of ``model`` in a :class:`CUDAGraphModule` (once); returns
    the names wrapped. Every wrapper has its own memory pool: a wrapper may recapture (new
    signature) while the others keep their graphs, which a shared pool does not allow.
    ``stable_outputs``: names among ``names`` whose wrappers return their outputs at stable
    addresses (``stable_output``; e.g. the rig-dependent view transformer and occupancy
    encoder, so that a new camera rig does not make the graphs downstream capture again);
    ``rekey_warmup``, ``emulate``, ``keep_memory``: :class:`CUDAGraphModule`'s, for the
    wrappers made here."""
    unknown = sorted(set(stable_outputs) - set(names))
    if unknown:
        raise ValueError(f'graph_modules: stable_outputs {unknown} are not among the graphed '
                         f'modules {list(names)}')
    check_graph_names(set(names) | {n for n, m in model.named_children()
                                    if isinstance(m, CUDAGraphModule)}, 'graph_modules')
    done = []
    for name in names:
        module = getattr(model, name, None)
        if module is None:
            continue
        if not isinstance(module, CUDAGraphModule):
            module = CUDAGraphModule(module, warmup, rekey_warmup=rekey_warmup,
                                     emulate=emulate, keep_memory=keep_memory)
            setattr(model, name, module)
        if name in stable_outputs:
            module.stable_output = True
        done.append(name)
    return done


def drop_graphs(model: nn.Module) -> None:
    """:meth:`CUDAGraphModule.drop` for each wrapper in ``model`` (itself included)."""
    for m in model.modules():
        if isinstance(m, CUDAGraphModule):
            m.drop()


def graph_steady(before: Dict[str, Dict[str, int]], after: Dict[str, Dict[str, int]]) -> bool:
    """Whether a call between two :func:`graph_counts` snapshots ran every graphed module it
    called from its graph: none was captured or run eagerly (a capture, or an eager warm-up
    call of a new signature, makes the call a start-up one; a module the call did not use,
    e.g. the tracking at a sequence start, does not). Without graphed modules every call is
    steady."""
    for name, now in after.items():
        was = before.get(name, {})
        if any(now.get(k, 0) != was.get(k, 0) for k in ('captures', 'eager_calls')):
            return False
    return True


def graph_counts(model: nn.Module) -> Dict[str, Dict[str, int]]:
    """``{name: dict(captures=..., replays=..., eager_calls=...)}`` for each
    :class:`CUDAGraphModule` child of ``model`` (a graph with no replays ran eagerly, e.g.
    inputs that change every frame)."""
    return {name: dict(captures=m.captures, replays=m.replays, eager_calls=m.eager_calls)
            for name, m in model.named_children() if isinstance(m, CUDAGraphModule)}
