"""Learned positional encoding of a 3D voxel volume (one embedding table per axis)."""
from typing import Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from trackocc.registry import MODELS


@MODELS.register_module()
class LearnedPositionalEncoding3D(BaseModule):
    """Concatenation of learned x, y and z embeddings.

    Args:
        num_feats (Sequence[int]): channels of the x, y and z embeddings; the output has
            ``sum(num_feats)`` channels (paper (96, 96, 64) for E = 256).
        row_num_embed (int): size of the x table (>= X of the volume; paper 50).
        col_num_embed (int): size of the y table (>= Y; paper 50).
        tub_num_embed (int): size of the z table (>= Z; paper 16).

    Forward: mask (B, X, Y, Z) (only its shape and device are used) ->
    pos (B, sum(num_feats), X, Y, Z); channel order x, y, z.
    """

    def __init__(self,
                 num_feats: Sequence[int] = (96, 96, 64),
                 row_num_embed: int = 50,
                 col_num_embed: int = 50,
                 tub_num_embed: int = 16,
                 init_cfg=dict(type='Uniform', layer='Embedding')):
        super().__init__(init_cfg=init_cfg)
        if len(num_feats) != 3:
            raise ValueError(f'LearnedPositionalEncoding3D: num_feats must give the x, y, z '
                             f'channels, got {num_feats}')
        self.num_feats = tuple(int(n) for n in num_feats)
        self.num_embeds = (row_num_embed, col_num_embed, tub_num_embed)
        self.row_embed = nn.Embedding(row_num_embed, self.num_feats[0])
        self.col_embed = nn.Embedding(col_num_embed, self.num_feats[1])
        self.tub_embed = nn.Embedding(tub_num_embed, self.num_feats[2])

    @property
    def out_channels(self) -> int:
        return sum(self.num_feats)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        B, X, Y, Z = mask.shape
        for axis, size, table in zip('XYZ', (X, Y, Z), self.num_embeds):
            if size > table:
                raise ValueError(f'LearnedPositionalEncoding3D: volume has {size} cells '
                                 f'along {axis} but the table only {table} embeddings')
        dev = mask.device
        fx, fy, fz = self.num_feats
        ex = self.row_embed(torch.arange(X, device=dev)).view(X, 1, 1, fx).expand(X, Y, Z, fx)
        ey = self.col_embed(torch.arange(Y, device=dev)).view(1, Y, 1, fy).expand(X, Y, Z, fy)
        ez = self.tub_embed(torch.arange(Z, device=dev)).view(1, 1, Z, fz).expand(X, Y, Z, fz)
        pos = torch.cat((ex, ey, ez), dim=-1).permute(3, 0, 1, 2)
        return pos.unsqueeze(0).expand(B, -1, -1, -1, -1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_feats={self.num_feats}, '
                f'num_embeds={self.num_embeds})')
