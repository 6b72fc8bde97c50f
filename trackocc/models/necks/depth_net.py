"""Camera-aware depth network of BEVDepth (used by :class:`LSSViewTransformerBEVDepth`).

The stride-16 image feature is reduced, modulated by two squeeze-excitation gates driven by an
MLP over the camera parameters (intrinsics, image augmentation, BEV augmentation, camera-to-ego
pose: 27 numbers per camera), then split into a context branch (the features that are lifted
to 3D) and a depth branch (residual blocks, ASPP, optional DCN, 1x1 conv to ``D`` depth logits).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_conv_layer
from mmdet.models.backbones.resnet import BasicBlock
from torch.utils.checkpoint import checkpoint

# Length of the camera-parameter vector built by ``LSSViewTransformerBEVDepth.get_mlp_input``.
CAM_PARAM_DIMS = 27


class _ASPPBranch(nn.Sequential):
    """Conv (no bias) + BN + ReLU at one dilation rate."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 dilation: int):
        padding = 0 if kernel_size == 1 else dilation
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU())


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3, rates 1/6/12/18 + image pooling).

    (M, C, h, w) -> (M, C, h, w); the five branches have ``mid_channels`` each and are fused
    back to ``in_channels`` by a 1x1 conv, BN, ReLU and dropout 0.5.
    """

    def __init__(self, in_channels: int, mid_channels: int = 256,
                 dilations=(1, 6, 12, 18), dropout: float = 0.5):
        super().__init__()
        self.branches = nn.ModuleList([
            _ASPPBranch(in_channels, mid_channels, 1 if d == 1 else 3, d)
            for d in dilations
        ])
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.BatchNorm2d(mid_channels), nn.ReLU())
        self.fuse = nn.Sequential(
            nn.Conv2d(mid_channels * (len(dilations) + 1), in_channels, 1, bias=False),
            nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Dropout(dropout))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(x)
        outs.append(F.interpolate(pooled, size=x.shape[-2:], mode='bilinear',
                                  align_corners=True))
        return self.fuse(torch.cat(outs, dim=1))


class CameraAwareMLP(nn.Sequential):
    """Two-layer MLP (Linear, ReLU, Linear) over the camera-parameter vector."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__(
            nn.Linear(in_features, hidden_features), nn.ReLU(),
            nn.Linear(hidden_features, out_features))


class SEGate(nn.Module):
    """Squeeze-excitation gate: ``x * sigmoid(conv(relu(conv(x_se))))``.

    x (M, C, h, w), x_se (M, C, 1, 1) -> (M, C, h, w).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels, 1, bias=True)
        self.expand = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, x_se: torch.Tensor) -> torch.Tensor:
        gate = self.expand(F.relu(self.reduce(x_se)))
        return x * gate.sigmoid()


class DepthNet(nn.Module):
    """BEVDepth depth/context network with camera-aware squeeze-excitation.

    Args:
        in_channels (int): channels of the input image feature (E).
        mid_channels (int): channels of the internal feature.
        context_channels (int): channels of the context output (C_t).
        depth_channels (int): number of depth bins (D).
        use_dcn (bool): append a deformable conv (mmcv ``DCN``, 4 groups) to the depth branch.
        use_aspp (bool): append ASPP to the depth branch.
        aspp_mid_channels (int): ASPP branch width; negative means ``mid_channels``.
        with_cp (bool): gradient checkpointing of the depth branch.

    Forward: x (M, in_channels, h, w), cam_params (M, 27) ->
    (M, depth_channels + context_channels, h, w): depth logits first, then context.
    Runs in float32 (autocast disabled) like the reference ``force_fp32``.
    """

    def __init__(self,
                 in_channels: int,
                 mid_channels: int,
                 context_channels: int,
                 depth_channels: int,
                 use_dcn: bool = True,
                 use_aspp: bool = True,
                 aspp_mid_channels: int = -1,
                 with_cp: bool = False):
        super().__init__()
        self.depth_channels = depth_channels
        self.context_channels = context_channels
        self.with_cp = with_cp
        self.reduce_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1),
            nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.context_conv = nn.Conv2d(mid_channels, context_channels, 1)
        self.bn = nn.BatchNorm1d(CAM_PARAM_DIMS)
        self.depth_mlp = CameraAwareMLP(CAM_PARAM_DIMS, mid_channels, mid_channels)
        self.depth_se = SEGate(mid_channels)
        self.context_mlp = CameraAwareMLP(CAM_PARAM_DIMS, mid_channels, mid_channels)
        self.context_se = SEGate(mid_channels)

        depth_layers = [BasicBlock(mid_channels, mid_channels) for _ in range(3)]
        if use_aspp:
            if aspp_mid_channels < 0:
                aspp_mid_channels = mid_channels
            depth_layers.append(ASPP(mid_channels, aspp_mid_channels))
        if use_dcn:
            depth_layers.append(build_conv_layer(
                dict(type='DCN', in_channels=mid_channels, out_channels=mid_channels,
                     kernel_size=3, padding=1, groups=4, im2col_step=128)))
        depth_layers.append(nn.Conv2d(mid_channels, depth_channels, 1))
        self.depth_conv = nn.Sequential(*depth_layers)

    def forward(self, x: torch.Tensor, cam_params: torch.Tensor) -> torch.Tensor:
        if cam_params.shape[-1] != CAM_PARAM_DIMS:
            raise ValueError(f'DepthNet expects {CAM_PARAM_DIMS} camera parameters per '
                             f'camera, got shape {tuple(cam_params.shape)}')
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            cam_params = self.bn(cam_params.reshape(-1, CAM_PARAM_DIMS).float())
            x = self.reduce_conv(x)
            context = self.context_se(x, self.context_mlp(cam_params)[..., None, None])
            context = self.context_conv(context)
            depth = self.depth_se(x, self.depth_mlp(cam_params)[..., None, None])
            if self.with_cp and depth.requires_grad:
                depth = checkpoint(self.depth_conv, depth, use_reentrant=False)
            else:
                depth = self.depth_conv(depth)
        return torch.cat([depth, context], dim=1)


def build_depth_net(in_channels: int, context_channels: int, depth_channels: int,
                    mid_channels: Optional[int] = None, **kwargs) -> DepthNet:
    """Build a :class:`DepthNet`; ``mid_channels`` defaults to ``in_channels`` (reference)."""
    return DepthNet(in_channels, mid_channels or in_channels, context_channels,
                    depth_channels, **kwargs)
