"""3D multi-scale deformable attention: trilinear sampling of multi-level value volumes.

For batch b, query q and head m::

    out[b, q, m] = sum_{l, p} attention_weights[b, q, m, l, p]
                   * trilinear(value_l[b, :, m], sampling_locations[b, q, m, l, p])

``value`` stacks the flattened levels: level l starts at ``level_start_index[l]`` and holds
``X_l * Y_l * Z_l`` keys in (X, Y, Z) C-order (key = (x * Y_l + y) * Z_l + z), i.e.
``volume.flatten(2)`` of a (B, C, X, Y, Z) volume. A location (x, y, z) in [0, 1] maps to voxel
coordinates ``x * X_l - 0.5`` (align_corners=False); samples outside the volume read zeros.

The original TrackOcc code feeds the (X, Y, Z) volume to ``F.grid_sample`` whose first grid
component indexes the last axis, so there location component 0 moves along Z and component 2
along X. :func:`multi_scale_deformable_attn_3d` keeps (x, y, z) = (X, Y, Z); to reproduce the
original exactly, pass ``sampling_locations.flip(-1)``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .ext_loader import require_cuda_ext, require_ext

_OP = 'multi_scale_deformable_attn_3d'


def _check_inputs(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor) -> None:
    """Shape checks shared by every implementation (no device synchronisation)."""
    if value.dim() != 4:
        raise ValueError(f'{_OP}: value must be (B, S, M, Dh), got {tuple(value.shape)}')
    B, S, M, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 3:
        raise ValueError(f'{_OP}: sampling_locations must be (B, Q, M, L, P, 3), got '
                         f'{tuple(sampling_locations.shape)}')
    _, Q, _, L, P, _ = sampling_locations.shape
    if sampling_locations.shape[0] != B or sampling_locations.shape[2] != M:
        raise ValueError(f'{_OP}: sampling_locations {tuple(sampling_locations.shape)} does not '
                         f'match value (B={B}, M={M})')
    if tuple(attention_weights.shape) != (B, Q, M, L, P):
        raise ValueError(f'{_OP}: attention_weights must be {(B, Q, M, L, P)}, got '
                         f'{tuple(attention_weights.shape)}')
    if spatial_shapes.shape != (L, 3) or level_start_index.shape != (L,):
        raise ValueError(f'{_OP}: spatial_shapes must be ({L}, 3) and level_start_index ({L},), '
                         f'got {tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}')
    if spatial_shapes.dtype.is_floating_point or level_start_index.dtype.is_floating_point:
        raise ValueError(f'{_OP}: spatial_shapes and level_start_index must be integer tensors')


def multi_scale_deformable_attn_3d_pytorch(value: Tensor, spatial_shapes: Tensor,
                                           level_start_index: Tensor,
                                           sampling_locations: Tensor,
                                           attention_weights: Tensor) -> Tensor:
    """Pure-PyTorch reference (``F.grid_sample`` on 5-D volumes), differentiable by autograd.

    Args:
        value: (B, S, M, Dh) flattened multi-level volumes, S = sum_l X_l * Y_l * Z_l.
        spatial_shapes: (L, 3) int64 (X_l, Y_l, Z_l).
        level_start_index: (L,) int64 offset of each level in S.
        sampling_locations: (B, Q, M, L, P, 3) normalized (x, y, z) in [0, 1].
        attention_weights: (B, Q, M, L, P).

    Returns:
        (B, Q, M * Dh).
    """
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights)
    B, S, M, Dh = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    shapes = [tuple(int(v) for v in s) for s in spatial_shapes.tolist()]
    starts = [int(v) for v in level_start_index.tolist()]
    if starts and starts[-1] + shapes[-1][0] * shapes[-1][1] * shapes[-1][2] != S:
        raise ValueError(f'{_OP}: spatial_shapes {shapes} and level_start_index {starts} do '
                         f'not cover the {S} keys of value')
    # grid_sample on (N, C, D, H, W) takes grid components ordered (w, h, d) = (z, y, x)
    grids = sampling_locations.flip(-1) * 2 - 1
    sampled = []
    for lvl, ((X, Y, Z), start) in enumerate(zip(shapes, starts)):
        # (B, X*Y*Z, M, Dh) -> (B*M, Dh, X, Y, Z)
        v = value[:, start:start + X * Y * Z].permute(0, 2, 3, 1).reshape(B * M, Dh, X, Y, Z)
        # (B, Q, M, P, 3) -> (B*M, 1, Q, P, 3)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(B * M, 1, Q, P, 3)
        s = F.grid_sample(v, g.to(v.dtype), mode='bilinear', padding_mode='zeros',
                          align_corners=False)
        sampled.append(s.view(B * M, Dh, Q, P))
    # (B*M, Dh, Q, L, P) weighted by (B*M, 1, Q, L, P)
    stacked = torch.stack(sampled, dim=3)
    weights = attention_weights.transpose(1, 2).reshape(B * M, 1, Q, L, P).to(stacked.dtype)
    out = (stacked * weights).sum(dim=(3, 4))  # (B*M, Dh, Q)
    return out.view(B, M * Dh, Q).transpose(1, 2).contiguous()


class MultiScaleDeformableAttn3DFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled kernels (CUDA: fp32, fp16, bf16, fp64; CPU C++).

    Locations and weights run in float32 (float64 for float64 values) whatever ``value``'s
    dtype, so half-precision values keep sub-voxel sampling precision.
    """

    @staticmethod
    def forward(ctx, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        require = require_cuda_ext if value.is_cuda else require_ext
        ext = require(_OP, 'ms_deform_attn_3d_forward')
        acc = torch.float64 if value.dtype == torch.float64 else torch.float32
        args = (value.contiguous(), spatial_shapes.to(value.device, torch.long).contiguous(),
                level_start_index.to(value.device, torch.long).contiguous(),
                sampling_locations.to(acc).contiguous(),
                attention_weights.to(acc).contiguous())
        out = ext.ms_deform_attn_3d_forward(*args)
        ctx.save_for_backward(*args)
        ctx.in_dtypes = (sampling_locations.dtype, attention_weights.dtype)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        value, shapes, starts, loc, attn = ctx.saved_tensors
        ext = require_ext(_OP, 'ms_deform_attn_3d_backward')
        grad_value, grad_loc, grad_attn = ext.ms_deform_attn_3d_backward(
            value, shapes, starts, loc, attn, grad_out.to(value.dtype).contiguous())
        return (grad_value if ctx.needs_input_grad[0] else None, None, None,
                grad_loc.to(ctx.in_dtypes[0]) if ctx.needs_input_grad[3] else None,
                grad_attn.to(ctx.in_dtypes[1]) if ctx.needs_input_grad[4] else None)


def multi_scale_deformable_attn_3d(value: Tensor, spatial_shapes: Tensor,
                                   level_start_index: Tensor, sampling_locations: Tensor,
                                   attention_weights: Tensor, *,
                                   impl: Optional[str] = None) -> Tensor:
    """3D multi-scale deformable attention (see the module docstring for the semantics).

    Args:
        value: (B, S, M, Dh).
        spatial_shapes: (L, 3) int64 (X_l, Y_l, Z_l).
        level_start_index: (L,) int64.
        sampling_locations: (B, Q, M, L, P, 3) normalized (x, y, z).
        attention_weights: (B, Q, M, L, P).
        impl: None picks the CUDA kernel for CUDA tensors and the PyTorch reference
            otherwise; 'pytorch' or 'ext' force one.

    Returns:
        (B, Q, M * Dh) in ``value``'s dtype.
    """
    if impl is None:
        impl = 'ext' if value.is_cuda else 'pytorch'
    if impl == 'pytorch':
        return multi_scale_deformable_attn_3d_pytorch(value, spatial_shapes, level_start_index,
                                                      sampling_locations, attention_weights)
    if impl != 'ext':
        raise ValueError(f"{_OP}: impl must be None, 'pytorch' or 'ext', got {impl!r}")
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                  attention_weights)
    return MultiScaleDeformableAttn3DFunction.apply(value, spatial_shapes, level_start_index,
                                                    sampling_locations, attention_weights)
