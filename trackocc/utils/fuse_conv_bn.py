"""Fold inference-mode batch norms into the convolutions that feed them.

mmcv's ``fuse_conv_bn`` reshapes the scale for 2D kernels only; this walks the module tree
the same way (a BN registered right after a convolution is applied to its output, as in
mmdet's ResNet, mmcv's ConvModule and ``nn.Sequential``) and folds with PyTorch's
``fuse_conv_bn_eval``, which handles 1D, 2D and 3D (transposed) convolutions.
"""
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(module: nn.Module) -> int:
    """Fold every BN that directly follows a convolution among the children of a module
    (recursively) into that convolution, and replace the BN by ``nn.Identity``.

    The module must be in eval mode (the BN's running statistics are used). Returns the
    number of folded pairs.
    """
    if module.training:
        raise RuntimeError('fuse_conv_bn: call model.eval() first (running statistics are '
                           'folded into the convolution weights)')
    fused = 0
    prev_name, prev = None, None
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and isinstance(prev, _ConvNd) and \
                child.track_running_stats and child.running_mean is not None and \
                prev.out_channels == child.num_features and \
                type(child).__name__.endswith(f'{prev.weight.dim() - 2}d'):
            setattr(module, prev_name, fuse_conv_bn_eval(
                prev, child, transpose=isinstance(prev, nn.modules.conv._ConvTransposeNd)))
            setattr(module, name, nn.Identity())
            fused += 1
            prev_name, prev = None, None
            continue
        fused += fuse_conv_bn(child) if len(list(child.children())) else 0
        prev_name, prev = name, child
    return fused
