"""The custom ops' PyTorch references counted as the one kernel a GPU runs for each call.

On a GPU, bev_pool_v2 and the 2D and 3D multi-scale deformable attention are one CUDA kernel
per call (a few in the backward pass); on the CPU the counting tools see their PyTorch
references, tens of ops that gather and weigh the whole sampling grid
(``multi_scale_deformable_attn_pytorch`` alone moves ~18 GiB in one training forward of the
paper config). Within :func:`references_as_kernels` each reference runs as it is, hidden from
the dispatch modes, and is reported to every active mode that has a ``record_kernel(name,
inputs, output)`` method (:class:`~trackocc.analysis.train_ops.OpCount`,
:class:`~trackocc.analysis.memory_traffic.TrafficRecorder`) as one call: its tensor inputs
read once and its output written once. Its backward is one autograd node, which recomputes
the reference and is reported as one call of ``<name>_backward`` (the saved inputs and the
output's gradient read, the inputs' gradients written).
"""
import contextlib
import importlib
from typing import Callable, Iterator, List

import torch
from torch.utils._python_dispatch import _disable_current_modes

# (module, attribute, kernel): where the model's code looks the references up at call time
KERNEL_REFERENCES = (
    ('trackocc.ops.bev_pool', 'bev_pool_v2_pytorch', 'bev_pool_v2'),
    ('trackocc.ops.msda_3d', 'multi_scale_deformable_attn_3d_pytorch', 'msda_3d'),
    ('trackocc.models.layers.spatial_cross_attention', 'multi_scale_deformable_attn_pytorch',
     'msda_2d'),
    ('mmcv.ops.multi_scale_deform_attn', 'multi_scale_deformable_attn_pytorch', 'msda_2d'),
)


def _report(modes: List[object], name: str, args: tuple, output) -> None:
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    for mode in modes:
        record = getattr(mode, 'record_kernel', None)
        if record is not None:
            record(name, inputs, output)


class _OneKernel(torch.autograd.Function):
    """``reference(*args, **kwargs)`` as one op of the active dispatch modes."""

    @staticmethod
    def forward(ctx, name: str, reference: Callable, kwargs: dict, *args):
        with _disable_current_modes() as modes:
            output = reference(*args, **kwargs)
        _report(modes, name, args, output)
        ctx.name, ctx.reference, ctx.kwargs = name, reference, kwargs
        ctx.slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
        ctx.others = [None if isinstance(a, torch.Tensor) else a for a in args]
        ctx.save_for_backward(*(args[i] for i in ctx.slots))
        return output

    @staticmethod
    def backward(ctx, grad_output):
        args = list(ctx.others)
        wanted = []
        for i, tensor in zip(ctx.slots, ctx.saved_tensors):
            if ctx.needs_input_grad[3 + i]:
                tensor = tensor.detach().requires_grad_(True)
                wanted.append((i, tensor))
            args[i] = tensor
        grads = [None] * len(args)
        if wanted:
            with torch.enable_grad(), _disable_current_modes() as modes:
                output = ctx.reference(*args, **ctx.kwargs)
                found = torch.autograd.grad(output, [t for _, t in wanted], grad_output,
                                            allow_unused=True)
            _report(modes, f'{ctx.name}_backward', (*ctx.saved_tensors, grad_output),
                    [g for g in found if g is not None])
            for (i, _), grad in zip(wanted, found):
                grads[i] = grad
        return (None, None, None, *grads)


def as_one_kernel(name: str, reference: Callable) -> Callable:
    """``reference`` wrapped so that the counting modes see one call of kernel ``name``."""
    def kernel(*args, **kwargs):
        return _OneKernel.apply(name, reference, kwargs, *args)

    kernel.__wrapped__ = reference
    return kernel


@contextlib.contextmanager
def references_as_kernels() -> Iterator[None]:
    """Within the block every reference of :data:`KERNEL_REFERENCES` runs as one kernel call
    (:func:`as_one_kernel`); the references are back when it ends."""
    saved = []
    try:
        for module_name, attr, name in KERNEL_REFERENCES:
            module = importlib.import_module(module_name)
            reference = getattr(module, attr)
            saved.append((module, attr, reference))
            setattr(module, attr, as_one_kernel(name, reference))
        yield
    finally:
        for module, attr, reference in reversed(saved):
            setattr(module, attr, reference)
