"""Spatial cross-attention from 3D voxel queries to multi-camera, multi-scale image features.

As in BEVFormer/TrackOcc: each voxel query is projected into every camera; a camera only
attends with the queries that project inside its image (queries are re-batched per camera to
save memory), the per-camera results are averaged over the cameras that see the query, then
projected, dropped out and added to the query.
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                              multi_scale_deformable_attn_pytorch)
from mmengine.model import BaseModule, constant_init, xavier_init
from trackocc.ops import multi_scale_deformable_attn_2d
from trackocc.registry import MODELS

from trackocc.utils.device_constants import device_constant

SAMPLING_IMPLS = ('mmcv', 'trackocc', 'pytorch')


def project_points_to_images(points: torch.Tensor, lidar2img: torch.Tensor,
                             img_shape: Sequence[int], eps: float = 1e-5
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Project ego-frame points into every camera.

    Args:
        points: (P, 3) ego (= LiDAR) coordinates.
        lidar2img: (B, N, 4, 4) ego -> augmented-input pixels (with perspective division).
        img_shape: network input (H, W).
    Returns:
        uv (B, N, P, 2) pixel coordinates divided by (W, H), and visible (B, N, P) bool:
        in front of the camera (depth > eps) and strictly inside (eps, 1 - eps).
    """
    H, W = img_shape
    homo = torch.cat([points, torch.ones_like(points[:, :1])], dim=-1)  # (P, 4)
    cam = torch.einsum('bnij,pj->bnpi', lidar2img.float(), homo.float())
    depth = cam[..., 2:3]
    uv = cam[..., :2] / torch.clamp(depth, min=eps)
    uv = uv / device_constant([W, H], uv.device, uv.dtype)
    visible = ((depth[..., 0] > eps) & (uv[..., 0] > eps) & (uv[..., 0] < 1.0 - eps)
               & (uv[..., 1] > eps) & (uv[..., 1] < 1.0 - eps))
    return uv, visible


class CameraQueryPlan(NamedTuple):
    """Re-batching of the visible queries per camera (shared by all encoder layers).

    ``order`` (B*N, L) query indices per camera row, its visible queries first (stable
    order) and padded with others; ``valid`` (B*N, L) bool marks the visible ones; L is the
    largest visible count (at least 1). ``cams_seeing`` (B, Q) float32: cameras seeing each
    query, at least 1.
    """
    order: torch.Tensor
    valid: torch.Tensor
    cams_seeing: torch.Tensor


def plan_camera_queries(visible: torch.Tensor, length: Optional[int] = None
                        ) -> CameraQueryPlan:
    """:class:`CameraQueryPlan` of a (B, N, Q) visibility mask.

    Reads the largest visible count on the host (one device synchronisation): compute it once
    per frame, or once per camera rig (:class:`OccupancyEncoder` caches it by geometry key).
    ``length``: L (at most Q, at least the largest visible count), e.g. one length for
    several camera rigs; the rows past a camera's visible queries are invalid padding.
    """
    B, N, Q = visible.shape
    vis = visible.reshape(B * N, Q)
    counts = vis.sum(1)
    max_len = max(int(counts.max()), 1) if counts.numel() else 1
    if length is not None:
        if not max_len <= length <= max(Q, 1):
            raise ValueError(f'plan_camera_queries: length {length} must lie between the '
                             f'largest visible count {max_len} and the {Q} queries')
        max_len = length
    order = torch.argsort((~vis).to(torch.uint8), dim=1, stable=True)[:, :max_len]
    valid = torch.arange(max_len, device=visible.device)[None] < counts[:, None]
    cams_seeing = visible.sum(1).clamp(min=1).float()
    return CameraQueryPlan(order, valid, cams_seeing)


@MODELS.register_module()
class ImageDeformableSampling(BaseModule):
    """Multi-scale 2D deformable sampling of image features (no output projection).

    BEVFormer's ``MSDeformableAttention3D``: a query may carry A reference points (anchors);
    its ``num_points`` sampling points per head and level are split evenly over them.
    ``sampling_impl`` picks the sampling kernel: 'mmcv' (mmcv's CUDA kernel for CUDA tensors,
    its ``grid_sample`` reference otherwise: as the original), 'trackocc' (trackocc's compiled
    3D kernels with one-voxel-deep levels, CUDA or CPU; ``trackocc.ops.msda_2d``) or
    'pytorch' (the reference everywhere). All three compute the same function.

    Forward: query (M, Q, E), value (M, S, E) flattened levels, reference_points
    (M, Q, A, 2) normalized (x, y), spatial_shapes (L, 2) long (h, w),
    level_start_index (L,) -> (M, Q, E).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4,
                 num_points: int = 8, im2col_step: int = 64, sampling_impl: str = 'mmcv',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if sampling_impl not in SAMPLING_IMPLS:
            raise ValueError(f'ImageDeformableSampling: sampling_impl must be one of '
                             f'{SAMPLING_IMPLS}, got {sampling_impl!r}')
        self.sampling_impl = sampling_impl
        if embed_dims % num_heads:
            raise ValueError(f'ImageDeformableSampling: embed_dims ({embed_dims}) must be '
                             f'divisible by num_heads ({num_heads})')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.im2col_step = im2col_step
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """Deformable-DETR init: offsets on rays at 1..P pixels, uniform attention."""
        constant_init(self.sampling_offsets, 0.)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(
            self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        constant_init(self.attention_weights, val=0., bias=0.)
        xavier_init(self.value_proj, distribution='uniform', bias=0.)
        self._is_init = True

    def forward(self, query: torch.Tensor, value: torch.Tensor,
                reference_points: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor) -> torch.Tensor:
        M, Q, _ = query.shape
        S = value.shape[1]
        A = reference_points.shape[2]
        H, L, P = self.num_heads, self.num_levels, self.num_points
        if P % A:
            raise ValueError(f'ImageDeformableSampling: num_points ({P}) must be a multiple '
                             f'of the number of reference points per query ({A})')
        if spatial_shapes.is_cuda:  # checked on the device: no host synchronisation
            torch._assert_async((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum() == S,
                                'ImageDeformableSampling: value length does not match '
                                'spatial_shapes')
        elif int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum()) != S:
            raise ValueError('ImageDeformableSampling: value length does not match '
                             f'spatial_shapes {spatial_shapes.tolist()}')
        value = self.value_proj(value).view(M, S, H, -1)
        offsets = self.sampling_offsets(query).view(M, Q, H, L, P // A, A, 2)
        weights = self.attention_weights(query).view(M, Q, H, L * P).softmax(-1)
        weights = weights.view(M, Q, H, L, P)
        normalizer = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(offsets)
        locations = (reference_points[:, :, None, None, None, :, :]
                     + offsets / normalizer[None, None, None, :, None, None, :])
        locations = locations.view(M, Q, H, L, P, 2)
        if self.sampling_impl == 'trackocc':
            return multi_scale_deformable_attn_2d(value, spatial_shapes, level_start_index,
                                                  locations, weights, impl='ext')
        if value.is_cuda and self.sampling_impl == 'mmcv':
            return MultiScaleDeformableAttnFunction.apply(
                value, spatial_shapes, level_start_index, locations, weights,
                self.im2col_step)
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, locations, weights)


@MODELS.register_module()
class SpatialCrossAttention(BaseModule):
    """Cross-attention of voxel queries to the images that see them.

    Args:
        embed_dims (int): E.
        num_heads (int), num_levels (int), num_points (int): of the deformable sampling
            (paper 8 heads, 4 FPN levels, 8 points).
        dropout (float): dropout on the projected output before the residual.
        im2col_step (int): of the mmcv CUDA kernel.
        sampling_impl (str): 'mmcv', 'trackocc' or 'pytorch' (see
            :class:`ImageDeformableSampling`).

    Forward: query (B, Q, E), value (B, N, S, E) flattened multi-level image features,
    reference_points_cam (B, N, Q, A, 2) normalized pixel coordinates, visible (B, N, Q)
    bool or its :class:`CameraQueryPlan`, spatial_shapes (L, 2), level_start_index (L,)
    -> (B, Q, E). Runs in float32.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4,
                 num_points: int = 8, dropout: float = 0.1, im2col_step: int = 64,
                 sampling_impl: str = 'mmcv', init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.deformable_attention = ImageDeformableSampling(
            embed_dims, num_heads, num_levels, num_points, im2col_step, sampling_impl)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        xavier_init(self.output_proj, distribution='uniform', bias=0.)

    def forward(self, query: torch.Tensor, value: torch.Tensor,
                reference_points_cam: torch.Tensor,
                visible: Union[torch.Tensor, CameraQueryPlan],
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                query_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, Q, E = query.shape
        N = value.shape[1]
        if isinstance(visible, CameraQueryPlan):
            plan = visible
            vis_ok = plan.cams_seeing.shape == (B, Q) and plan.order.shape[0] == B * N
            vis_desc = f'a plan of {plan.order.shape[0]} camera rows x ' \
                f'{tuple(plan.cams_seeing.shape)} queries'
        else:
            plan, vis_ok, vis_desc = None, visible.shape == (B, N, Q), tuple(visible.shape)
        if reference_points_cam.shape[:3] != (B, N, Q) or not vis_ok:
            raise ValueError(
                f'SpatialCrossAttention: reference_points_cam {tuple(reference_points_cam.shape)}'
                f' and visible {vis_desc} must match (B, N, Q) = {(B, N, Q)}')
        if plan is None:
            plan = plan_camera_queries(visible)
        with torch.autocast(device_type=query.device.type, enabled=False):
            residual = query.float()
            q = residual if query_pos is None else residual + query_pos.float()
            order, valid = plan.order, plan.valid
            batch_of_row = torch.arange(B, device=q.device).repeat_interleave(N)
            q_re = q[batch_of_row[:, None], order] * valid[..., None]  # (B*N, max_len, E)
            ref = reference_points_cam.float().reshape(B * N, Q, *reference_points_cam.shape[3:])
            ref_re = ref[torch.arange(B * N, device=q.device)[:, None], order]
            out = self.deformable_attention(
                q_re, value.float().reshape(B * N, value.shape[2], E), ref_re,
                spatial_shapes, level_start_index)  # (B*N, max_len, E)
            flat_index = (batch_of_row[:, None] * Q + order).reshape(-1)
            slots = q.new_zeros(B * Q, E).index_add(
                0, flat_index, (out * valid[..., None]).reshape(-1, E)).view(B, Q, E)
            slots = self.output_proj(slots / plan.cams_seeing[..., None])
            return self.dropout(slots) + residual
