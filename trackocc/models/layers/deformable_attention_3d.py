"""Multi-scale deformable attention over 3D feature volumes (Deformable-DETR lifted to 3D).

Every query predicts, per head, level and point, a 3D offset (in voxels of that level) from
its reference point and an attention weight; values are sampled trilinearly with
``trackocc.ops.multi_scale_deformable_attn_3d``. TrackOcc uses it as the self-attention of the
occupancy encoder (queries = compact voxels) and as the cross-attention of the mask decoder
(queries = 4D panoptic queries, values = compact occupancy volume).
"""
import math
import warnings
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule, constant_init, xavier_init
from trackocc.registry import MODELS

from trackocc.ops import multi_scale_deformable_attn_3d


@MODELS.register_module()
class DeformableAttention3D(BaseModule):
    """3D multi-scale deformable attention with output projection, dropout and residual.

    Args:
        embed_dims (int): query/value channels E.
        num_heads (int): heads M (E % M == 0).
        num_levels (int): value levels L.
        num_points (int): sampling points P per head and level.
        dropout (float): dropout on the projected output before the residual.
        batch_first (bool): queries/values are (B, Q, E); otherwise (Q, B, E).
        legacy_axis_order (bool): reproduce the reference implementation, whose PyTorch
            sampling fed (x, y, z) locations to ``grid_sample`` on an (X, Y, Z) volume, so that
            x indexed Z and z indexed X. Only for running converted reference checkpoints
            exactly; the default samples where the reference points say.
        init_cfg: mmengine init config.

    Forward: query (B, Q, E), value (B, S, E) with S = sum of X_l * Y_l * Z_l (flattened
    from (B, E, X, Y, Z), X slowest), reference_points (B, Q, L, 3) or (B, Q, 3) in [0, 1]
    ordered (x, y, z), spatial_shapes (L, 3) long as (X, Y, Z), level_start_index (L,)
    -> (B, Q, E).
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_levels: int = 1,
                 num_points: int = 4,
                 dropout: float = 0.1,
                 batch_first: bool = True,
                 legacy_axis_order: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'DeformableAttention3D: embed_dims ({embed_dims}) must be '
                             f'divisible by num_heads ({num_heads})')
        head_dims = embed_dims // num_heads
        if head_dims & (head_dims - 1):
            warnings.warn(f'DeformableAttention3D: {head_dims} dims per head is not a power '
                          'of 2, which is slower in the CUDA kernel')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.batch_first = batch_first
        self.legacy_axis_order = legacy_axis_order
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 3)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """Zero offset weights; biases spread the points on rays around each head's direction
        (cos t, sin t, (cos t + sin t) / 2), at 1..P voxels; uniform attention weights."""
        constant_init(self.sampling_offsets, 0.)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (
            2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin(), (thetas.cos() + thetas.sin()) / 2], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 3).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        constant_init(self.attention_weights, val=0., bias=0.)
        xavier_init(self.value_proj, distribution='uniform', bias=0.)
        xavier_init(self.output_proj, distribution='uniform', bias=0.)
        self._is_init = True

    def forward(self,
                query: torch.Tensor,
                value: Optional[torch.Tensor] = None,
                identity: Optional[torch.Tensor] = None,
                query_pos: Optional[torch.Tensor] = None,
                reference_points: Optional[torch.Tensor] = None,
                spatial_shapes: Optional[torch.Tensor] = None,
                level_start_index: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None,
                **kwargs) -> torch.Tensor:
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value, identity = (t.transpose(0, 1) for t in (query, value, identity))
        B, Q, _ = query.shape
        S = value.shape[1]
        if spatial_shapes is None or reference_points is None:
            raise ValueError('DeformableAttention3D needs reference_points and spatial_shapes')
        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=query.device)
        if spatial_shapes.shape != (self.num_levels, 3):
            raise ValueError(f'DeformableAttention3D: spatial_shapes must be '
                             f'({self.num_levels}, 3), got {tuple(spatial_shapes.shape)}')
        if spatial_shapes.is_cuda:  # checked on the device: no host synchronisation
            torch._assert_async(spatial_shapes.prod(1).sum() == S,
                                'DeformableAttention3D: value length does not match '
                                'spatial_shapes')
        elif int(spatial_shapes.prod(1).sum()) != S:
            raise ValueError(f'DeformableAttention3D: value has {S} elements but '
                             f'spatial_shapes {spatial_shapes.tolist()} describe '
                             f'{int(spatial_shapes.prod(1).sum())}')
        if level_start_index is None:
            level_start_index = torch.cat([spatial_shapes.new_zeros(1),
                                           spatial_shapes.prod(1).cumsum(0)[:-1]])
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None, :].expand(
                B, Q, self.num_levels, 3)

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(B, S, self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(
            B, Q, self.num_heads, self.num_levels, self.num_points, 3)
        weights = self.attention_weights(query).view(
            B, Q, self.num_heads, self.num_levels * self.num_points).softmax(-1)
        weights = weights.view(B, Q, self.num_heads, self.num_levels, self.num_points)
        normalizer = spatial_shapes.to(offsets.dtype)  # (L, 3) as (X, Y, Z)
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        if self.legacy_axis_order:
            locations = locations.flip(-1)
        out = multi_scale_deformable_attn_3d(value, spatial_shapes, level_start_index,
                                             locations, weights)
        out = self.dropout(self.output_proj(out)) + identity
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out
