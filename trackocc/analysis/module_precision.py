"""One sub-module of a model at another precision than the rest, for a precision scan: which
part of the low-precision fast path moves the predictions away from float32's.

``only``: the model in float32, the named sub-module under autocast (its floating outputs cast
back to float32 for the float32 layers after it). ``except``: the model under autocast, the
named sub-module in float32 (autocast off inside, its low-precision floating inputs cast to
float32). Tensors inside mmengine data elements (e.g. ``TrackInstances``) are cast in place,
field by field; integer and bool tensors are never touched."""
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Sequence

import torch
from mmengine.structures import BaseDataElement
from torch import nn

from ..models.detectors.autocast_scope import to_float32

DIRECTIONS = ('only', 'except')


def cast_to_float32(obj):
    """``obj`` with every floating tensor of another dtype as float32: tensors, lists, tuples
    (named ones too) and dicts rebuilt; the data fields of data elements changed in place
    (their identity kept, as the model may hold them); anything else returned as is."""
    if isinstance(obj, torch.Tensor):
        return to_float32(obj)
    if isinstance(obj, BaseDataElement):
        for key, value in list(obj.items()):
            obj.set_field(cast_to_float32(value), key)
        return obj
    if isinstance(obj, dict):
        return type(obj)((k, cast_to_float32(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, '_fields'):
        return type(obj)(*(cast_to_float32(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(cast_to_float32(v) for v in obj)
    return obj


def _wrapped(forward: Callable, direction: str, device_type: str, dtype: torch.dtype,
             count: Callable[[], None]) -> Callable:
    if direction == 'only':
        def run(*args, **kwargs):
            count()
            with torch.autocast(device_type, dtype=dtype):
                out = forward(*args, **kwargs)
            return cast_to_float32(out)
    else:
        def run(*args, **kwargs):
            count()
            with torch.autocast(device_type, enabled=False):
                return forward(*cast_to_float32(args), **cast_to_float32(kwargs))
    return run


def find_submodule(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)``; ``ValueError`` naming the module and the model's
    children otherwise."""
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        children = ', '.join(n for n, _ in model.named_children())
        raise ValueError(f'no sub-module {name!r} in the model (its children: {children})'
                         ) from err


@contextmanager
def module_precision(model: nn.Module, names: Sequence[str], direction: str,
                     device_type: str, dtype: torch.dtype) -> Iterator[Dict[str, int]]:
    """Within the block, the sub-modules ``names`` of ``model`` run as ``direction`` says
    (``'only'``: they alone under autocast to ``dtype``, the caller running the model in
    float32; ``'except'``: they in float32, the caller running the model under autocast).
    Their ``forward`` is replaced on the instance and restored on exit. Yields ``{name:
    calls}``, counted as they run (a module the stream never calls changes nothing)."""
    if direction not in DIRECTIONS:
        raise ValueError(f'module_precision: direction must be one of {DIRECTIONS}, got '
                         f'{direction!r}')
    modules = [find_submodule(model, n) for n in names]
    calls = {n: 0 for n in names}
    saved = []
    try:
        for name, module in zip(names, modules):
            saved.append((module, module.__dict__.get('forward')))

            def count(name=name):
                calls[name] += 1
            module.forward = _wrapped(module.forward, direction, device_type, dtype, count)
        yield calls
    finally:
        for module, own in reversed(saved):
            if own is None:
                del module.forward
            else:
                module.forward = own


@contextmanager
def autocast_entries(model: nn.Module, names: Sequence[str],
                     device_type: str) -> Iterator[Dict[str, int]]:
    """Within the block, count the calls of each sub-module of ``names`` that begin under
    autocast on ``device_type`` (a forward pre-hook each): the modules a low-precision run
    leaves in float32 (e.g. those outside TrackOcc's ``autocast_scope='reference'`` regions)
    count 0. Yields ``{name: calls under autocast}``."""
    modules = [find_submodule(model, n) for n in names]
    counts = {n: 0 for n in names}
    handles = []

    def hook(name: str) -> Callable:
        def count(module, args):
            if torch.is_autocast_enabled(device_type):
                counts[name] += 1
        return count

    try:
        for name, module in zip(names, modules):
            handles.append(module.register_forward_pre_hook(hook(name)))
        yield counts
    finally:
        for handle in handles:
            handle.remove()
