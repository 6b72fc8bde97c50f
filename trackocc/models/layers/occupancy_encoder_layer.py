"""One layer of the occupancy encoder: 3D deformable self-attention, spatial cross-attention
to the images, FFN, each followed by LayerNorm (post-norm, as the reference OccFormerLayer)."""
from typing import Optional

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmengine.model import BaseModule, ModuleList
from trackocc.registry import MODELS

from .deformable_attention_3d import DeformableAttention3D
from .spatial_cross_attention import SpatialCrossAttention


@MODELS.register_module()
class OccupancyEncoderLayer(BaseModule):
    """self_attn -> norm -> cross_attn -> norm -> ffn -> norm over compact voxel queries.

    Args:
        embed_dims (int): E.
        self_attn_cfg (dict): kwargs of :class:`DeformableAttention3D` (paper: 8 heads,
            1 level, 4 points, dropout 0.1).
        cross_attn_cfg (dict): kwargs of :class:`SpatialCrossAttention` (paper: 8 heads,
            4 levels, 8 points, dropout 0.1).
        ffn_cfg (dict): kwargs of mmcv ``FFN`` (paper: feedforward_channels 2E, 2 fcs,
            ffn_drop 0.1, ReLU).
        norm_cfg (dict): normalisation after each block (LN).

    Forward: query (B, Q, E), query_pos (B, Q, E), ref_3d (B, Q, 1, 3) normalized voxel
    centres, volume_shape (1, 3) long (X, Y, Z), img_value (B, N, S, E),
    reference_points_cam (B, N, Q, 1, 2), visible (B, N, Q), img_spatial_shapes (L, 2),
    img_level_start_index (L,) -> (B, Q, E).
    """

    def __init__(self,
                 embed_dims: int = 256,
                 self_attn_cfg: Optional[dict] = None,
                 cross_attn_cfg: Optional[dict] = None,
                 ffn_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='LN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.self_attn = DeformableAttention3D(embed_dims=embed_dims, batch_first=True,
                                               **(self_attn_cfg or {}))
        self.cross_attn = SpatialCrossAttention(embed_dims=embed_dims,
                                                **(cross_attn_cfg or {}))
        # ReLU out of place: in place on the first Linear's output (a view of its 2D
        # product) it would make autograd rebase the view (CopySlices: a clone and a copy of
        # the whole gradient in the backward pass); the same values
        ffn_kwargs = dict(feedforward_channels=2 * embed_dims, num_fcs=2, ffn_drop=0.1,
                          act_cfg=dict(type='ReLU', inplace=False))
        ffn_kwargs.update(ffn_cfg or {})
        self.ffn = FFN(embed_dims=embed_dims, **ffn_kwargs)
        self.norms = ModuleList([build_norm_layer(norm_cfg, embed_dims)[1] for _ in range(3)])

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, ref_3d: torch.Tensor,
                volume_shape: torch.Tensor, img_value: torch.Tensor,
                reference_points_cam: torch.Tensor, visible: torch.Tensor,
                img_spatial_shapes: torch.Tensor,
                img_level_start_index: torch.Tensor) -> torch.Tensor:
        query = self.self_attn(query, query, identity=query, query_pos=query_pos,
                               reference_points=ref_3d, spatial_shapes=volume_shape,
                               level_start_index=volume_shape.new_zeros(1))
        query = self.norms[0](query)
        query = self.cross_attn(query, img_value, reference_points_cam, visible,
                                img_spatial_shapes, img_level_start_index)
        query = self.norms[1](query)
        query = self.ffn(query, query)
        return self.norms[2](query)
