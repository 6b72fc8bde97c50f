"""Folding inference batch norms into convolutions (2D ResNet, 3D ConvModule, transposed)."""
import pytest
import torch
from torch import nn

from trackocc.utils.fuse_conv_bn import fuse_conv_bn


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)


@pytest.mark.parametrize('case', ['resnet2d', 'convmodule3d', 'transposed3d'])
def test_fused_model_gives_the_same_outputs(case):
    torch.manual_seed(0)
    if case == 'resnet2d':
        from mmdet.models.backbones import ResNet
        model, x, expect = ResNet(depth=18, out_indices=(3, )), torch.randn(1, 3, 64, 64), 20
    elif case == 'convmodule3d':
        from mmcv.cnn import ConvModule
        model = nn.Sequential(
            ConvModule(4, 8, 3, padding=1, conv_cfg=dict(type='Conv3d'),
                       norm_cfg=dict(type='BN3d')),
            nn.Conv3d(8, 8, 1), nn.BatchNorm3d(8), nn.ReLU())
        x, expect = torch.randn(2, 4, 6, 6, 4), 2
    else:
        model = nn.Sequential(nn.ConvTranspose3d(4, 6, 2, stride=2), nn.BatchNorm3d(6))
        x, expect = torch.randn(1, 4, 3, 3, 2), 1
    _randomize_bn(model)
    model.eval()
    with torch.no_grad():
        before = model(x)
        assert fuse_conv_bn(model) == expect
        after = model(x)
    before = before[-1] if isinstance(before, tuple) else before
    after = after[-1] if isinstance(after, tuple) else after
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_only_a_bn_of_the_conv_output_is_folded_and_training_is_refused():
    # a BatchNorm1d of another size after a conv (e.g. of a camera-parameter vector) stays
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm1d(27))
    model.eval()
    assert fuse_conv_bn(model) == 0
    assert isinstance(model[1], nn.BatchNorm1d)
    with pytest.raises(RuntimeError, match='eval'):
        fuse_conv_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
