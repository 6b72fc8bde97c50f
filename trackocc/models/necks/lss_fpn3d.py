"""3D feature-pyramid neck fusing the stages of :class:`CustomResNet3D` into the compact volume."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch.utils.checkpoint import checkpoint
from trackocc.registry import MODELS

from ..layers.sliced_conv3d import SlicedConv3d


@MODELS.register_module()
class LSSFPN3D(BaseModule):
    """Resample three 3D feature levels to one size, concatenate, 1x1x1 conv-BN-ReLU.

    Args:
        in_channels (int): sum of the channels of the three levels (paper 7 * C_t).
        out_channels (int): channels of the compact volume (C_t).
        reverse (bool): resample every level to ``size`` (TrackOcc); otherwise upsample
            levels 2 and 3 by 2 and 4 to the first level (FlashOcc-style FPN).
        size (tuple[int]): compact (X, Y, Z), paper (50, 50, 16).
        norm_cfg (dict): 3D normalisation.
        with_cp (bool): gradient checkpointing of the fusing conv.

    Forward: feats [x_8 (B, C0, X0, Y0, Z0), x_16 (B, C1, ...), x_32 (B, C2, ...)] ->
    compact (B, out_channels, *size) and, with ``reverse``, the multi-scale list
    ``[x_8, x_16, x_32 resampled to size]`` (paper: (C_t, 200, 200, 16), (2 C_t, 100, 100, 8),
    (4 C_t, 50, 50, 16)); without ``reverse`` the list is ``[compact]``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 reverse: bool = True,
                 size: Sequence[int] = (50, 50, 16),
                 norm_cfg: dict = dict(type='BN3d'),
                 with_cp: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if len(size) != 3:
            raise ValueError(f'LSSFPN3D: size must be (X, Y, Z), got {size}')
        self.in_channels = in_channels
        self.reverse = reverse
        self.size = tuple(int(s) for s in size)
        self.with_cp = with_cp
        self.conv = ConvModule(in_channels, out_channels, 1, bias=False,
                               conv_cfg=dict(type=SlicedConv3d), norm_cfg=norm_cfg,
                               act_cfg=dict(type='ReLU', inplace=True))

    def forward(self, feats: Sequence[torch.Tensor]
                ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        if len(feats) != 3:
            raise ValueError(f'LSSFPN3D expects 3 feature levels, got {len(feats)}')
        x_8, x_16, x_32 = feats
        channels = x_8.shape[1] + x_16.shape[1] + x_32.shape[1]
        if channels != self.in_channels:
            raise ValueError(f'LSSFPN3D: levels have {channels} channels in total, '
                             f'in_channels is {self.in_channels}')
        if self.reverse:
            up_8 = F.interpolate(x_8, size=self.size, mode='trilinear', align_corners=True)
            up_16 = F.interpolate(x_16, size=self.size, mode='trilinear', align_corners=True)
        else:
            up_8 = x_8
            up_16 = F.interpolate(x_16, scale_factor=2, mode='trilinear', align_corners=True)
            x_32 = F.interpolate(x_32, scale_factor=4, mode='trilinear', align_corners=True)
        if x_32.shape[-3:] != up_8.shape[-3:]:
            x_32 = F.interpolate(x_32, size=up_8.shape[-3:], mode='trilinear',
                                 align_corners=False)
        x = torch.cat([up_8, up_16, x_32], dim=1)
        if self.with_cp and x.requires_grad:
            compact = checkpoint(self.conv, x, use_reentrant=False)
        else:
            compact = self.conv(x)
        if self.reverse:
            return compact, [x_8, x_16, x_32]
        return compact, [compact]
