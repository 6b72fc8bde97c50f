"""Channels-last convolution stacks during inference.

cuDNN runs low-precision convolutions in NHWC (NDHWC for 3D): a network whose tensors are in
PyTorch's default NCHW layout pays a layout conversion before and after each convolution. With
the weights in ``torch.channels_last`` / ``torch.channels_last_3d`` and the inputs of a stack
converted once, every convolution, folded batch norm and element-wise op of the stack keeps
that layout and the conversions go. The values are those of the default layout up to float
rounding (another kernel may sum in another order).

:class:`ChannelsLast` converts the weights of the native 2D / 3D convolutions
(``torch.nn`` convolution classes and their subclasses such as
:class:`~trackocc.models.layers.sliced_conv3d.SlicedConv3d`, which runs ``F.conv3d`` at
inference) of chosen sub-modules, converts their 4D / 5D floating-point inputs with forward
pre-hooks, and gives outputs that leave the stack for other code (custom ops read memory as
contiguous) back in the default layout with forward hooks. Sparse convolutions (spconv /
mmcv ``SparseModule``) are no ``_ConvNd`` and are left alone; mmcv's deformable convolutions
get contiguous inputs. Everything is restored on exit.
"""
from typing import Iterable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.conv import _ConvNd

from .cuda_graph import CUDAGraphModule, drop_graphs


class Stack(NamedTuple):
    """A sub-module run channels-last.

    Args:
        path (str): dotted attribute path from the model (``'img_view_transformer.depth_net'``).
        dims (int): 2 (4D tensors, ``channels_last``) or 3 (5D tensors, ``channels_last_3d``).
        convert_inputs (bool): convert its 4D / 5D (by ``dims``) float inputs on entry.
        restore_outputs (bool): give its 4D / 5D float outputs back contiguous on exit (they
            go to code outside the channels-last stacks).
    """
    path: str
    dims: int
    convert_inputs: bool = True
    restore_outputs: bool = True


# TrackOcc: image backbone -> neck (its features also go to the occupancy encoder's image
# cross-attention, a custom op: restored), the depth net (-> bev_pool: restored), the 3D
# volume encoder (-> occupancy encoder: restored). The occupancy encoder is not among them:
# channels-last 3D made it slower on an H200 (graph-bf16, trained checkpoint, held-out data:
# 10.66 vs 6.27 ms per frame, while the image stacks gained 0.33 ms and the volume encoder
# 0.17 ms; docs/benchmark.md, "Fixed query budget"); pass ``OCC_ENCODER_STACK`` to try it.
TRACKOCC_STACKS = (
    Stack('img_backbone', 2, True, False),
    Stack('img_neck', 2, False, True),
    Stack('img_view_transformer.depth_net', 2, True, True),
    Stack('volume_encoder_backbone', 3, True, False),
    Stack('volume_encoder_neck', 3, False, True),
)
# the occupancy encoder's convolutions channels-last (its inputs include 5D (B, N, C, h, w)
# image features, not volumes, so none are converted: volumes come channels-last only from a
# volume encoder whose outputs are not restored)
OCC_ENCODER_STACK = Stack('occ_encoder', 3, False, True)

_FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}


def _deform_conv_types() -> tuple:
    try:
        from mmcv.ops import DeformConv2d, ModulatedDeformConv2d
    except ImportError:  # mmcv without compiled ops
        return ()
    return (DeformConv2d, ModulatedDeformConv2d)


def _map_tensors(obj, fn):
    """``fn`` applied to every tensor in nested tuples / lists / dicts of ``obj``."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, '_fields'):  # named tuple
        return type(obj)(*(_map_tensors(x, fn) for x in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(x, fn) for x in obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map_tensors(v, fn)) for k, v in obj.items())
    return obj


def _to_format(ndim: int, memory_format: torch.memory_format):
    def convert(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == ndim and x.is_floating_point():
            return x.contiguous(memory_format=memory_format)
        return x
    return convert


class ChannelsLast:
    """Context manager: the convolution stacks of ``model`` run channels-last inside the block.

    Args:
        model (nn.Module): e.g. the TrackOcc detector (sub-modules may be
            :class:`~trackocc.utils.cuda_graph.CUDAGraphModule` wrappers: the hooks go on the
            wrapped module, so the conversions are captured in its graph).
        stacks (Iterable[Stack]): the sub-modules; default :data:`TRACKOCC_STACKS`. A path the
            model lacks is skipped (e.g. no refiner); a path that resolves to nothing at all is
            an error.

    ``count`` is the number of convolutions converted. Inference only (refuses a module in
    training mode). Entering and leaving drop the model's CUDA graphs (a graph reads the weight
    tensors and strides it was captured with). Weights are swapped in place (``param.data``),
    so the block composes with :class:`~trackocc.utils.autocast_weights.AutocastWeights` when
    the two are nested (either order; exit in reverse order of entry). Fold batch norms
    before entering: folding replaces the convolutions.

    Example::

        with AutocastWeights(model, torch.bfloat16), ChannelsLast(model):
            ...
    """

    def __init__(self, model: nn.Module, stacks: Optional[Iterable[Stack]] = None) -> None:
        self.model = model
        self.stacks: Tuple[Stack, ...] = tuple(TRACKOCC_STACKS if stacks is None else stacks)
        for stack in self.stacks:
            if not isinstance(stack, Stack) or stack.dims not in _FORMATS:
                raise ValueError(f'ChannelsLast: stacks must be Stack(path, dims in (2, 3), '
                                 f'...), got {stack!r}')
        self._saved: List[Tuple[nn.Parameter, torch.Tensor]] = []
        self._handles: list = []
        self.count = 0
        self.paths: List[str] = []  # the stacks found in the model

    def _resolve(self, path: str) -> Optional[nn.Module]:
        module = self.model
        for part in path.split('.'):
            module = getattr(module, part, None)
            if module is None:
                return None
            if isinstance(module, CUDAGraphModule):
                module = module.module
        if not isinstance(module, nn.Module):
            raise TypeError(f'ChannelsLast: {path} of {type(self.model).__name__} is a '
                            f'{type(module).__name__}, not a module')
        return module

    def __enter__(self) -> 'ChannelsLast':
        if self.model.training:
            raise RuntimeError('ChannelsLast: inference only (call model.eval() first)')
        if self._saved or self._handles:
            raise RuntimeError('ChannelsLast: already entered')
        found = [(s, self._resolve(s.path)) for s in self.stacks]
        found = [(s, m) for s, m in found if m is not None]
        if not found:
            raise ValueError(f'ChannelsLast: none of {[s.path for s in self.stacks]} is a '
                             f'sub-module of {type(self.model).__name__}')
        deform = _deform_conv_types()
        seen = set()
        try:
            for stack, module in found:
                self._convert(stack, module, deform, seen)
        except Exception:
            self.__exit__(None, None, None)
            raise
        self.paths = [s.path for s, _ in found]
        drop_graphs(self.model)
        return self

    def _convert(self, stack: Stack, module: nn.Module, deform: tuple, seen: set) -> None:
        ndim = stack.dims + 2
        memory_format = _FORMATS[stack.dims]
        for layer in module.modules():
            if isinstance(layer, deform):  # mmcv's kernels read their input as contiguous
                self._handles.append(layer.register_forward_pre_hook(
                    lambda _, args: _map_tensors(args, _to_format(4, torch.contiguous_format))))
            if not isinstance(layer, _ConvNd) or id(layer) in seen:
                continue
            seen.add(id(layer))
            weight = layer.weight
            if weight.dim() != 4 and weight.dim() != 5:
                continue  # 1D convolutions have no channels-last layout
            weight_format = _FORMATS[weight.dim() - 2]
            self._saved.append((weight, weight.data))
            weight.data = weight.data.contiguous(memory_format=weight_format)
            self.count += 1
        if stack.convert_inputs:
            self._handles.append(module.register_forward_pre_hook(
                lambda _, args: _map_tensors(args, _to_format(ndim, memory_format))))
        if stack.restore_outputs:
            self._handles.append(module.register_forward_hook(
                lambda _, _args, out: _map_tensors(out, _to_format(
                    ndim, torch.contiguous_format))))

    def __exit__(self, *exc) -> None:
        for handle in reversed(self._handles):
            handle.remove()
        self._handles.clear()
        for weight, data in reversed(self._saved):
            weight.data = data
        self._saved.clear()
        drop_graphs(self.model)
