"""Mask decoder of the 4D panoptic queries: per layer 3D deformable cross-attention to the
compact occupancy volume, query self-attention and FFN (post-norm), with reference points
refined after every layer."""
import copy
from typing import List, Optional, Tuple

from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from trackocc.registry import MODELS
from ..trackers.ego_motion import inverse_sigmoid


class MaskDecoderLayer(BaseModule):
    """cross_attn -> norm -> self_attn -> norm -> ffn -> norm (batch first).

    Args:
        cross_attn_cfg (dict): config of the 3D deformable cross-attention
            (``DeformableAttention3D``, batch first, residual inside).
        self_attn_cfg (dict): kwargs of ``mmcv`` ``MultiheadAttention``.
        ffn_cfg (dict): kwargs of ``mmcv`` ``FFN``.
        norm_cfg (dict): normalization config.
        self_attn_residual (str): what the self-attention output is added to.
            ``'cross_attn_out'`` (the original TrackOcc): the cross-attention output taken
            before ``norms[0]``, i.e. ``a = q + CA(q)``, ``q' = norms[1](a + SA(norms[0](a)))``;
            ``'normed_query'`` (a standard post-norm layer): the normalised query,
            ``q' = norms[1](n + SA(n))`` with ``n = norms[0](a)``.
    """

    SELF_ATTN_RESIDUALS = ('cross_attn_out', 'normed_query')

    def __init__(self, cross_attn_cfg: dict, self_attn_cfg: dict, ffn_cfg: dict,
                 norm_cfg: dict = dict(type='LN'), self_attn_residual: str = 'cross_attn_out',
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if self_attn_residual not in self.SELF_ATTN_RESIDUALS:
            raise ValueError(f'MaskDecoderLayer: self_attn_residual must be one of '
                             f'{self.SELF_ATTN_RESIDUALS}, got {self_attn_residual!r}')
        self.self_attn_residual = self_attn_residual
        self.cross_attn = MODELS.build(cross_attn_cfg)
        self.self_attn = MultiheadAttention(**self_attn_cfg, batch_first=True)
        self.ffn = FFN(**ffn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        self.norms = ModuleList(
            [build_norm_layer(norm_cfg, self.embed_dims)[1] for _ in range(3)])

    def forward(self, query: Tensor, query_pos: Tensor, value: Tensor, ref_pts: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor,
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """``key_padding_mask`` (B, Q) bool: True for queries the self-attention ignores as
        keys (padding rows); the cross-attention and the FFN are per query."""
        attended = self.cross_attn(
            query, value, query_pos=query_pos, reference_points=ref_pts,
            spatial_shapes=spatial_shapes, level_start_index=level_start_index)
        query = self.norms[0](attended)
        identity = attended if self.self_attn_residual == 'cross_attn_out' else query
        query = self.norms[1](self.self_attn(query, identity=identity, query_pos=query_pos,
                                             key_padding_mask=key_padding_mask))
        return self.norms[2](self.ffn(query))


@MODELS.register_module()
class MaskDecoder(BaseModule):
    """Stack of :class:`MaskDecoderLayer` refining reference points after each layer.

    After layer ``l`` the reference point becomes
    ``sigmoid(reg_branches[l](query) + inverse_sigmoid(ref_pts))`` (gradients flow through
    the refinement, as in the reference).

    Args:
        num_layers (int): decoder layers (1 in the paper config).
        embed_dims (int): E.
        num_heads (int): heads of both attentions. Defaults to 8.
        num_points (int): deformable sampling points. Defaults to 4.
        num_levels (int): value volume levels. Defaults to 1.
        feedforward_channels (int): FFN hidden size. Defaults to 2E.
        dropout (float): dropout of attention and FFN. Defaults to 0.1.
        with_refine (bool): refine reference points per layer. Defaults to True.
        legacy_axis_order (bool): sample with the reference code's swapped x/z axes (only
            to run converted reference checkpoints, see ``DeformableAttention3D``).
        self_attn_residual (str): residual of the query self-attention, see
            :class:`MaskDecoderLayer`; the default ``'cross_attn_out'`` is the original's.
    """

    def __init__(self,
                 num_layers: int = 1,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_points: int = 4,
                 num_levels: int = 1,
                 feedforward_channels: Optional[int] = None,
                 dropout: float = 0.1,
                 with_refine: bool = True,
                 legacy_axis_order: bool = False,
                 self_attn_residual: str = 'cross_attn_out',
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if num_layers < 1:
            raise ValueError(f'MaskDecoder needs num_layers >= 1, got {num_layers}')
        layer_cfg = dict(
            cross_attn_cfg=dict(type='DeformableAttention3D', embed_dims=embed_dims,
                                num_heads=num_heads, num_levels=num_levels,
                                num_points=num_points, dropout=dropout,
                                legacy_axis_order=legacy_axis_order),
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, attn_drop=dropout,
                               dropout_layer=dict(type='Dropout', drop_prob=dropout)),
            ffn_cfg=dict(embed_dims=embed_dims,
                         feedforward_channels=feedforward_channels or 2 * embed_dims,
                         ffn_drop=dropout,
                         # out of place: see OccupancyEncoderLayer's FFN (no CopySlices)
                         act_cfg=dict(type='ReLU', inplace=False)),
            self_attn_residual=self_attn_residual)
        self.layers = ModuleList([MaskDecoderLayer(**copy.deepcopy(layer_cfg))
                                  for _ in range(num_layers)])
        self.embed_dims = embed_dims
        self.reg_branches = ModuleList([nn.Linear(embed_dims, 3) for _ in range(num_layers)]
                                       ) if with_refine else None

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, query: Tensor, query_pos: Tensor, ref_pts: Tensor, value: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor,
                key_padding_mask: Optional[Tensor] = None
                ) -> Tuple[List[Tensor], List[Tensor]]:
        """
        Args:
            query, query_pos (Tensor): (B, Q, E).
            ref_pts (Tensor): (B, Q, 3) normalized reference points.
            value (Tensor): (B, S, E) flattened value volumes.
            spatial_shapes (Tensor): (L, 3) long (X_l, Y_l, Z_l) of the value levels.
            level_start_index (Tensor): (L,) long.
            key_padding_mask (Tensor, optional): (B, Q) bool, True for padding queries: no
                query attends to them (their own outputs are meaningless and must be dropped
                by the caller). None: every query is a key.

        Returns:
            per layer: the query (B, Q, E) and the refined reference points (B, Q, 3).
        """
        outs, refs = [], []
        for lid, layer in enumerate(self.layers):
            query = layer(query, query_pos, value, ref_pts, spatial_shapes, level_start_index,
                          key_padding_mask)
            if self.reg_branches is not None:
                ref_pts = (self.reg_branches[lid](query) + inverse_sigmoid(ref_pts)).sigmoid()
            outs.append(query)
            refs.append(ref_pts)
        return outs, refs
