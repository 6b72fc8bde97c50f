"""Full-resolution mask features: the enhanced compact volume upsampled and fused with the
multi-scale volume features (the reference head's ``up0``/``up1``/``final_conv``)."""
from typing import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule, Sequential
from trackocc.registry import MODELS

from .sliced_conv3d import SlicedConv3d, SlicedConvTranspose3d


def _up_block(in_channels: int, out_channels: int, norm_cfg: dict) -> Sequential:
    """(3, 3, 1) transposed conv, then a (2, 2, 1)-strided transposed conv: x2 in X and Y."""
    deconv = dict(type=SlicedConvTranspose3d)  # nn.ConvTranspose3d, faster on CPU
    act = dict(type='ReLU', inplace=True)
    return Sequential(
        ConvModule(in_channels, out_channels, (3, 3, 1), padding=(1, 1, 0),
                   conv_cfg=deconv, norm_cfg=norm_cfg, act_cfg=act),
        ConvModule(out_channels, out_channels, (2, 2, 1), stride=(2, 2, 1),
                   conv_cfg=deconv, norm_cfg=norm_cfg, act_cfg=act))


def _cat_for_conv(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, 1)`` for a convolution that comes next. Under autocast the parts
    are cast to its dtype first: a float32 part (a region's output) would otherwise promote
    the whole concatenation to float32, and the convolution would cast it straight back. The
    same values (a cast commutes with a concatenation), without the float32 copy."""
    device_type = tensors[0].device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        tensors = [t.to(dtype) for t in tensors]
    return torch.cat(tensors, dim=1)


@MODELS.register_module()
class MaskFeatureUpsampler(BaseModule):
    """Upsample the compact volume x4 in X, Y and fuse the multi-scale volume features.

    Args:
        in_channels (int): C_t (the volume-encoder width).
        out_channels (int): channels of the mask features (E).
        norm_cfg (dict): 3D normalisation of the upsampling blocks.

    Forward: compact (B, C_t, X, Y, Z), ms_volume_feats [full (B, C_t, 4X, 4Y, Z),
    half (B, 2 C_t, 2X, 2Y, Z'), quarter (B, 4 C_t, X, Y, Z)] (the :class:`LSSFPN3D` list)
    -> mask features (B, E, 4X, 4Y, Z), ReLU-activated.
    """

    def __init__(self, in_channels: int = 32, out_channels: int = 256,
                 norm_cfg: dict = dict(type='BN3d'), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        c = in_channels
        self.in_channels = in_channels
        self.up0 = _up_block(5 * c, 2 * c, norm_cfg)
        self.up1 = _up_block(4 * c, 2 * c, norm_cfg)
        self.final_conv = ConvModule(3 * c, out_channels, 1, bias=True,
                                     conv_cfg=dict(type=SlicedConv3d), norm_cfg=None,
                                     act_cfg=dict(type='ReLU', inplace=True))

    def forward(self, compact: torch.Tensor,
                ms_volume_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(ms_volume_feats) != 3:
            raise ValueError(f'MaskFeatureUpsampler expects 3 multi-scale volume features, '
                             f'got {len(ms_volume_feats)}')
        full, half, quarter = ms_volume_feats
        c = self.in_channels
        expected = [(c, full), (2 * c, half), (4 * c, quarter)]
        for ch, feat in expected:
            if feat.shape[1] != ch:
                raise ValueError(
                    'MaskFeatureUpsampler: multi-scale volume channels '
                    f'{[f.shape[1] for f in ms_volume_feats]} do not match '
                    f'[{c}, {2 * c}, {4 * c}] for in_channels={c}')
        if quarter.shape[-3:] != compact.shape[-3:]:
            raise ValueError(f'MaskFeatureUpsampler: quarter-scale volume '
                             f'{tuple(quarter.shape[-3:])} must match the compact volume '
                             f'{tuple(compact.shape[-3:])}')
        x = self.up0(_cat_for_conv([compact, quarter]))  # (2C, 2X, 2Y, Z)
        half = F.interpolate(half, size=x.shape[-3:], mode='trilinear', align_corners=True)
        x = self.up1(_cat_for_conv([x, half]))  # (2C, 4X, 4Y, Z)
        if full.shape[-3:] != x.shape[-3:]:
            raise ValueError(f'MaskFeatureUpsampler: full-resolution volume '
                             f'{tuple(full.shape[-3:])} must be 4x the compact volume in X, Y '
                             f'({tuple(x.shape[-3:])})')
        return self.final_conv(_cat_for_conv([full, x]))
