"""2D multi-scale deformable attention (Deformable-DETR / mmcv semantics) on the 3D kernels.

A 2D level of shape (H, W) is a volume of shape (X, Y, Z) = (H, W, 1): its row-major keys
``h * W + w`` are the volume's keys ``(h * W + w) * 1 + 0``, and a normalized location
(x, y) = (w / W, h / H) becomes (h / H, w / W, 0.5), whose depth coordinate ``0.5 * 1 - 0.5``
is exactly 0: the trilinear weights of the one slice are the bilinear weights times 1 and the
second slice lies outside the volume. So :func:`multi_scale_deformable_attn_2d` computes mmcv's
``multi_scale_deformable_attn`` (bilinear, align_corners=False, zero padding) with the compiled
3D kernels: vector loads over channels and a shared corner computation per sample, with
gradients for value, locations and weights. The reference is mmcv's own
``multi_scale_deformable_attn_pytorch`` (``F.grid_sample``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .msda_3d import MultiScaleDeformableAttn3DFunction, _check_inputs

_OP = 'multi_scale_deformable_attn_2d'


def as_volume_inputs(spatial_shapes: Tensor, sampling_locations: Tensor):
    """(L, 3) shapes (H, W, 1) and (B, Q, M, L, P, 3) locations (y, x, 0.5) of 2D inputs."""
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[-1] != 2:
        raise ValueError(f'{_OP}: spatial_shapes must be (L, 2) (h, w), got '
                         f'{tuple(spatial_shapes.shape)}')
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f'{_OP}: sampling_locations must be (B, Q, M, L, P, 2) (x, y), got '
                         f'{tuple(sampling_locations.shape)}')
    shapes = torch.cat([spatial_shapes, torch.ones_like(spatial_shapes[:, :1])], dim=1)
    locations = torch.cat([sampling_locations.flip(-1),
                           torch.full_like(sampling_locations[..., :1], 0.5)], dim=-1)
    return shapes, locations


def multi_scale_deformable_attn_2d(value: Tensor, spatial_shapes: Tensor,
                                   level_start_index: Tensor, sampling_locations: Tensor,
                                   attention_weights: Tensor,
                                   impl: Optional[str] = None) -> Tensor:
    """mmcv's multi-scale deformable attention through the compiled 3D kernels.

    Args:
        value: (B, S, M, Dh) flattened levels, S = sum_l H_l * W_l.
        spatial_shapes: (L, 2) int64 (H_l, W_l).
        level_start_index: (L,) int64.
        sampling_locations: (B, Q, M, L, P, 2) normalized (x, y) = (w, h) in [0, 1].
        attention_weights: (B, Q, M, L, P).
        impl: None picks the CUDA kernels for CUDA tensors and mmcv's ``grid_sample``
            reference otherwise (as every trackocc op); 'ext' (compiled kernels, CUDA or CPU)
            or 'pytorch' force one.

    Returns:
        (B, Q, M * Dh) in ``value``'s dtype.
    """
    if impl is None:
        impl = 'ext' if value.is_cuda else 'pytorch'
    if impl == 'pytorch':
        from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                                   attention_weights)
    if impl != 'ext':
        raise ValueError(f"{_OP}: impl must be None, 'pytorch' or 'ext', got {impl!r}")
    shapes, locations = as_volume_inputs(spatial_shapes, sampling_locations)
    _check_inputs(value, shapes, level_start_index, locations, attention_weights)
    return MultiScaleDeformableAttn3DFunction.apply(value, shapes, level_start_index, locations,
                                                    attention_weights)
