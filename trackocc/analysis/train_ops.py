"""The work of one training forward pass as a GPU launches it, counted on any device.

A batch-1 training iteration of the paper config is bound by the host's kernel launches
(docs/benchmark.md, "Training profile"). Each ATen op that is not a view is at least one
kernel on a GPU, and each autograd node of the loss one or more in the backward pass; both
counts are the same on every machine, so a change to the training pass can be weighed on the
CPU. :func:`count_training_ops` runs ``model.loss`` and ``model.parse_losses`` once and
reports them; :func:`native_3d_convolutions` puts the 3D convolutions on the GPU's code path
(``SlicedConv3d`` trains on the CPU as 2D convolutions, which a GPU never does), and
:func:`~trackocc.analysis.kernel_references.references_as_kernels` counts each call of a
custom op (bev_pool_v2, the 2D and 3D deformable attention) as the one kernel a GPU runs.
"""
import collections
import contextlib
from typing import Iterator, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..models.layers import sliced_conv3d
from .host_ops import _source_line
from .memory_traffic import record_traffic

# ops that alias their input (no kernel)
VIEW_OPS = frozenset({
    'view', 't', 'permute', 'transpose', 'detach', 'slice', 'select', 'unsqueeze', 'squeeze',
    'expand', 'alias', 'unbind', 'split', 'split_with_sizes', 'chunk', 'reshape',
    '_unsafe_view', 'as_strided', 'lift_fresh', 'unflatten', 'flatten'})


class OpCount(TorchDispatchMode):
    """Counts the ATen ops dispatched while on: ``ops`` (not views) by the innermost trackocc
    / mmdet / mmcv / mmengine source file (``by_file``) or, with ``lines``, file and line,
    and ``views``; a custom op's reference run as one kernel
    (:func:`~trackocc.analysis.kernel_references.references_as_kernels`) is one op, also
    counted in ``kernels`` by name."""

    def __init__(self, lines: bool = False):
        super().__init__()
        self.lines = lines
        self.ops = self.views = 0
        self.by_file: collections.Counter = collections.Counter()
        self.kernels: collections.Counter = collections.Counter()

    def _count_op(self) -> None:
        self.ops += 1
        where = _source_line()
        self.by_file[where if self.lines else where.split(':')[0]] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._overloadpacket.__name__ in VIEW_OPS:
            self.views += 1
        else:
            self._count_op()
        return func(*args, **(kwargs or {}))

    def record_kernel(self, name: str, inputs, output) -> None:
        self._count_op()
        self.kernels[name] += 1


def autograd_nodes(loss: torch.Tensor) -> set:
    """The autograd nodes the backward pass of ``loss`` runs (every node reachable from its
    ``grad_fn``)."""
    seen, stack = set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return seen


def backward_nodes(loss: torch.Tensor) -> collections.Counter:
    """The autograd nodes reachable from ``loss`` by class name (``AccumulateGrad``: the
    parameters and leaf inputs reached)."""
    return collections.Counter(type(f).__name__ for f in autograd_nodes(loss))


@contextlib.contextmanager
def native_3d_convolutions() -> Iterator[None]:
    """Within the block ``SlicedConv3d`` / ``SlicedConvTranspose3d`` run ``nn.Conv3d`` /
    ``nn.ConvTranspose3d``'s forward on every device, as they do on a GPU."""
    patched = ((sliced_conv3d.SlicedConv3d, nn.Conv3d),
               (sliced_conv3d.SlicedConvTranspose3d, nn.ConvTranspose3d))
    own = [(cls, cls.__dict__['forward']) for cls, _ in patched]
    try:
        for cls, native in patched:
            cls.forward = native.forward
        yield
    finally:
        for cls, forward in own:
            cls.forward = forward


def count_training_ops(model, data: dict, lines: bool = False,
                       top: Optional[int] = None) -> dict:
    """One ``model.loss`` on the preprocessed ``data`` (training mode) and its
    ``parse_losses``, counted: ``forward_ops`` / ``forward_view_ops``, ``kernel_calls`` (the
    custom ops counted as one kernel each, by name), ``by_file`` (the
    ``top`` files or, with ``lines``, lines with most ops), ``parse_losses_ops``,
    ``backward_nodes`` (of the plain sum of the terms), ``accumulate_grad`` and
    ``backward_nodes_from_parsed_loss`` (of the total the optimizer steps on)."""
    count, parse = OpCount(lines), OpCount()
    with count:
        losses = model(**data, mode='loss')
    with parse:
        total, _ = model.parse_losses(losses)
    nodes = backward_nodes(sum(losses.values()))
    accumulate = nodes.pop('AccumulateGrad', 0)
    parsed = backward_nodes(total)
    parsed.pop('AccumulateGrad', 0)
    return dict(forward_ops=count.ops, forward_view_ops=count.views,
                kernel_calls=dict(sorted(count.kernels.items())),
                backward_nodes=sum(nodes.values()), accumulate_grad=accumulate,
                parse_losses_ops=parse.ops,
                backward_nodes_from_parsed_loss=sum(parsed.values()),
                by_file=dict(count.by_file.most_common(top)))


def training_traffic(model, data: dict, lines: bool = False, top: int = 20,
                     dtype: torch.dtype = torch.bfloat16) -> dict:
    """The bytes of one training step on the CPU under ``dtype`` autocast
    (:mod:`~trackocc.analysis.memory_traffic`): ``forward`` (``model.loss``: by kind, op,
    module and, with ``lines``, source line) and ``backward`` (of the total
    ``parse_losses`` gives the optimizer: by kind and op and, with ``lines``, the forward
    line that made each node, recorded by anomaly mode during the forward). The gradients
    are cleared afterwards."""
    anomaly = torch.autograd.set_detect_anomaly(True, check_nan=False) if lines else \
        contextlib.nullcontext()
    with anomaly, torch.autocast('cpu', dtype=dtype), \
            record_traffic(model, 1, lines) as forward:
        losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    del losses
    with record_traffic(lines=lines) as backward:
        total.backward()
    model.zero_grad(set_to_none=True)
    return dict(forward=forward.summary(top), backward=backward.summary(top))
