"""``torch.compile`` of named sub-modules in place, and a TF32 scope for float32 matmuls.

The fast inference path (``benchmark.py --graph-compile-modules``, ``tools/test.py --fast
--compile-modules``) compiles the dense sub-networks first and then captures them in CUDA graphs
(:mod:`trackocc.utils.cuda_graph`): the graphs replay Inductor's fused elementwise kernels
instead of eager chains of casts, copies and pointwise ops (docs/benchmark.md).
"""
import contextlib
from typing import Collection, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

# torch.compile modes whose code runs as CUDA-graph trees: a step mark
# (torch.compiler.cudagraph_mark_step_begin) before each frame or training iteration
CUDAGRAPH_COMPILE_MODES = ('reduce-overhead', 'max-autotune')

# The dense sub-networks of a TrackOcc detector compiled by default by benchmark.py's compile*
# inference modes, and in training (CompileModulesHook, benchmark.py --train) with the depth
# net and the mask-feature upsampler too (one H200, 2026-12-05, bf16 training iteration of the
# paper config: 238 -> 205 ms in one process; the four alone 263 -> 230 ms; docs/benchmark.md)
COMPILE_MODULES = ('img_backbone', 'img_neck', 'volume_encoder_backbone', 'volume_encoder_neck')
TRAINING_COMPILE_MODULES = ('img_backbone', 'img_neck', 'img_view_transformer.depth_net',
                            'volume_encoder_backbone', 'volume_encoder_neck',
                            'occ_encoder.upsampler')

# The tracking sub-modules whose inputs have one row per track (fresh queries + live tracks),
# so their sizes change from frame to frame unless the detector keeps fixed track rows.
TRACK_ROW_MODULES = ('memory_bank', 'query_interaction')


def compile_modules(model: nn.Module, names: Sequence[str], mode: Optional[str] = None,
                    strict: bool = False, dynamic: Collection[str] = ()) -> List[str]:
    """Replace each named sub-module of ``model`` (a dotted path, e.g.
    ``occ_encoder.upsampler``) by its ``torch.compile`` d wrapper, once (a compiled one is
    kept); the wrapper holds the same module, so its parameters are shared, but their state
    dict keys gain ``_orig_mod.`` (compile a copy that is not saved, as ``FastInferenceHook``
    does). Returns the names compiled. A name the model lacks is skipped, or with ``strict``
    a ValueError naming it (checked for every name before any is compiled). Names also in
    ``dynamic`` compile with dynamic shapes from their first call (``torch.compile(dynamic=
    True)``; see :func:`dynamic_shape_modules`); the others specialise on their first sizes
    (``dynamic=None``: a recompile with dynamic sizes at the first new size)."""
    found = []
    for name in names:
        parent_name, _, leaf = name.rpartition('.')
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
            found.append((name, parent, leaf, parent.get_submodule(leaf)))
        except AttributeError:
            if strict:
                raise ValueError(f'compile_modules: {type(model).__name__} has no sub-module '
                                 f'{name!r} to compile') from None
    for name, parent, leaf, module in found:
        if not hasattr(module, '_orig_mod'):  # not yet a torch._dynamo OptimizedModule
            setattr(parent, leaf, torch.compile(module, mode=mode,
                                                dynamic=True if name in dynamic else None))
    return [name for name, *_ in found]


def compile_in_place(model: nn.Module, names: Sequence[str], **compile_kwargs) -> List[str]:
    """``torch.compile`` each named sub-module of ``model`` (dotted paths) in place
    (:meth:`torch.nn.Module.compile`: the module itself is kept, so parameter names, state
    dict keys, optimizer groups and hooks on it stay as they are, as training needs), once (a
    module compiled before is left as it is). ``compile_kwargs`` go to ``torch.compile``
    (``mode``, ``backend``, ``dynamic``, ...). Returns the names compiled now. A name
    ``model`` lacks raises a ValueError naming it, before anything is compiled."""
    modules = []
    for name in names:
        try:
            modules.append((name, model.get_submodule(name)))
        except AttributeError:
            raise ValueError(f'compile_in_place: {type(model).__name__} has no sub-module '
                             f'{name!r} to compile') from None
    done = []
    for name, module in modules:
        if getattr(module, '_compiled_call_impl', None) is None:
            module.compile(**compile_kwargs)
            done.append(name)
    return done


def dynamic_shape_modules(model: nn.Module) -> Tuple[str, ...]:
    """The sub-modules of ``model`` to compile with dynamic shapes: the tracking modules whose
    row count is the number of tracks (``TRACK_ROW_MODULES``), unless ``model`` keeps fixed
    track rows. Compiled on their first sizes instead, each kind of call (e.g. a sequence's
    second frame, whose tracks still hold the fresh query parameters) recompiles at its first
    new track count, which may come many sequences later: one H200 frame of about 1 s
    (docs/benchmark.md)."""
    if getattr(model, 'fixed_track_rows', False):
        return ()
    return tuple(n for n in TRACK_ROW_MODULES if hasattr(model, n))


def has_compiled_modules(model: nn.Module) -> bool:
    """Whether ``model`` holds a ``torch.compile`` d sub-module (or is one)."""
    return any(hasattr(m, '_orig_mod') for m in model.modules())


def compiled_graphs() -> int:
    """Graphs ``torch.compile`` (Dynamo) has compiled in this process so far, recompiles
    included. A frame during which this grows paid a compile (a first call, or new input
    sizes of a compiled module outside the CUDA graphs, e.g. the tracking modules, whose
    number of tracks changes): it is not a steady-state frame."""
    from torch._dynamo.utils import counters
    return int(counters['stats']['unique_graphs'])


@contextlib.contextmanager
def float32_matmul_precision(precision: Optional[str]) -> Iterator[None]:
    """``torch.set_float32_matmul_precision(precision)`` inside the block (``'high'``: float32
    matmuls in TF32, as cuDNN runs float32 convolutions by default), the previous setting
    restored after; None: unchanged."""
    before = torch.get_float32_matmul_precision()
    if precision is not None:
        torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
