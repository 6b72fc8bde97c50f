"""3D ResNet over the LSS feature volume (the volume-encoder backbone of TrackOcc)."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.models.backbones.resnet import BasicBlock
from mmengine.model import BaseModule
from torch.utils.checkpoint import checkpoint
from trackocc.registry import MODELS

from ..layers.sliced_conv3d import SlicedConv3d


@MODELS.register_module()
class CustomResNet3D(BaseModule):
    """Stages of 3D basic residual blocks (3x3x3 convs, BN, ReLU).

    The first block of stage ``i`` changes the channels to ``num_channels[i]`` and the
    resolution by ``stride[i]`` (its shortcut is a strided 3x3x3 conv + norm, as in the
    reference); the other ``num_layer[i] - 1`` blocks keep them. The blocks are mmdet's
    ``BasicBlock`` built with 3D convolutions (:class:`SlicedConv3d`) and a 3D ``norm_cfg``.

    Args:
        numC_input (int): input channels (C_t).
        num_layer (list[int]): blocks per stage; paper [1, 2, 4].
        num_channels (list[int] | None): channels per stage; default
            ``numC_input * 2 ** (i + 1)``; paper [C_t, 2 C_t, 4 C_t].
        stride (list[int]): stride per stage; paper [1, 2, 2].
        backbone_output_ids (list[int] | None): stages whose outputs are returned.
        norm_cfg (dict): 3D normalisation (``BN3d``; ``SyncBN`` for distributed runs).
        with_cp (bool): gradient checkpointing per stage.
        init_cfg (dict): default Kaiming-normal (fan_out, ReLU) on the 3D convs, the init of
            the reference's ConvModule-based blocks.

    Forward: x (B, numC_input, X, Y, Z) -> list of (B, num_channels[i], X/s_i, Y/s_i, Z/s_i)
    where s_i is the cumulated stride; paper: (C_t, 200, 200, 16), (2 C_t, 100, 100, 8),
    (4 C_t, 50, 50, 4).
    """

    def __init__(self,
                 numC_input: int,
                 num_layer: Sequence[int] = (2, 2, 2),
                 num_channels: Optional[Sequence[int]] = None,
                 stride: Sequence[int] = (2, 2, 2),
                 backbone_output_ids: Optional[Sequence[int]] = None,
                 norm_cfg: dict = dict(type='BN3d'),
                 with_cp: bool = False,
                 init_cfg=dict(type='Kaiming', layer='Conv3d')):
        super().__init__(init_cfg=init_cfg)
        if len(num_layer) != len(stride):
            raise ValueError(f'CustomResNet3D: num_layer {list(num_layer)} and stride '
                             f'{list(stride)} must have the same length')
        if num_channels is None:
            num_channels = [numC_input * 2**(i + 1) for i in range(len(num_layer))]
        if len(num_channels) != len(num_layer):
            raise ValueError(f'CustomResNet3D: num_channels {list(num_channels)} must have '
                             f'one entry per stage ({len(num_layer)})')
        self.backbone_output_ids = (list(range(len(num_layer)))
                                    if backbone_output_ids is None else list(backbone_output_ids))
        conv_cfg = dict(type=SlicedConv3d)  # nn.Conv3d, faster to train on CPU
        stages = []
        in_ch = numC_input
        for n_blocks, out_ch, s in zip(num_layer, num_channels, stride):
            shortcut = ConvModule(in_ch, out_ch, 3, stride=s, padding=1, bias=False,
                                  conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)
            blocks = [BasicBlock(in_ch, out_ch, stride=s, downsample=shortcut,
                                 conv_cfg=conv_cfg, norm_cfg=norm_cfg)]
            blocks += [BasicBlock(out_ch, out_ch, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
                       for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.layers = nn.Sequential(*stages)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for idx, stage in enumerate(self.layers):
            if self.with_cp and x.requires_grad:
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
            if idx in self.backbone_output_ids:
                feats.append(x)
        return feats
