"""CustomResNet3D + LSSFPN3D: shapes of the compact volume and multi-scale list, gradients."""
import pytest
import torch

from trackocc.registry import MODELS


def _build(c=4, size=(8, 8, 8)):
    backbone = MODELS.build(dict(type='CustomResNet3D', numC_input=c, num_layer=[1, 2, 1],
                                 num_channels=[c, 2 * c, 4 * c], stride=[1, 2, 2],
                                 backbone_output_ids=[0, 1, 2]))
    neck = MODELS.build(dict(type='LSSFPN3D', in_channels=7 * c, out_channels=c,
                             reverse=True, size=size))
    return backbone, neck


def test_shapes_follow_the_paper_layout_at_tiny_size():
    # paper: (C_t, 200, 200, 16) -> compact (C_t, 50, 50, 16); here (4, 32, 32, 8) -> (8, 8, 8)
    torch.manual_seed(0)
    backbone, neck = _build()
    x = torch.randn(2, 4, 32, 32, 8, requires_grad=True)
    feats = backbone(x)
    assert [tuple(f.shape) for f in feats] == [(2, 4, 32, 32, 8), (2, 8, 16, 16, 4),
                                              (2, 16, 8, 8, 2)]
    compact, ms = neck(feats)
    assert compact.shape == (2, 4, 8, 8, 8)
    assert [tuple(f.shape) for f in ms] == [(2, 4, 32, 32, 8), (2, 8, 16, 16, 4),
                                           (2, 16, 8, 8, 8)]
    assert (compact >= 0).all()  # conv-BN-ReLU
    (compact.sum() + sum(f.sum() for f in ms)).backward()
    assert x.grad.abs().sum() > 0
    for module in (backbone, neck):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_backbone_block_structure_and_norm_cfg():
    backbone = MODELS.build(dict(type='CustomResNet3D', numC_input=4, num_layer=[1, 2, 4],
                                 num_channels=[4, 8, 16], stride=[1, 2, 2],
                                 norm_cfg=dict(type='GN', num_groups=2)))
    assert [len(stage) for stage in backbone.layers] == [1, 2, 4]
    first = backbone.layers[1][0]
    assert isinstance(first.conv1, torch.nn.Conv3d) and first.conv1.stride == (2, 2, 2)
    assert first.downsample.conv.kernel_size == (3, 3, 3)  # strided 3x3x3 shortcut
    assert isinstance(first.norm1, torch.nn.GroupNorm)


def test_paper_sizes_construct():
    backbone = MODELS.build(dict(type='CustomResNet3D', numC_input=32, num_layer=[1, 2, 4],
                                 num_channels=[32, 64, 128], stride=[1, 2, 2],
                                 backbone_output_ids=[0, 1, 2]))
    neck = MODELS.build(dict(type='LSSFPN3D', in_channels=224, out_channels=32,
                             reverse=True, size=(50, 50, 16)))
    n_params = sum(p.numel() for m in (backbone, neck) for p in m.parameters())
    # 3x3x3 conv weights: 4,064,256
    # (stage 1: 82,944; stage 2: 442,368; stage 3: 3,538,944) + 7,168 in the neck + norms
    assert 4_071_424 < n_params < 4_080_000


def test_bad_inputs():
    backbone, neck = _build()
    feats = backbone(torch.randn(1, 4, 32, 32, 8))
    with pytest.raises(ValueError, match='3 feature levels'):
        neck(feats[:2])
    with pytest.raises(ValueError, match='in_channels'):
        neck([feats[0], feats[1], feats[1]])
    with pytest.raises(ValueError, match='same length'):
        MODELS.build(dict(type='CustomResNet3D', numC_input=4, num_layer=[1, 2],
                          stride=[1, 2, 2]))


@pytest.mark.parametrize('kernel,stride,padding,bias', [
    (3, 1, 1, False), (3, 2, 1, True), (1, 1, 0, True), ((3, 3, 1), (2, 2, 1), (1, 1, 0), True),
    ((3, 1, 3), (1, 2, 2), (0, 1, 1), False)])
def test_sliced_conv3d_equals_conv3d(kernel, stride, padding, bias):
    from trackocc.models.layers.sliced_conv3d import SlicedConv3d
    torch.manual_seed(0)
    sliced = SlicedConv3d(3, 5, kernel, stride=stride, padding=padding, bias=bias)
    native = torch.nn.Conv3d(3, 5, kernel, stride=stride, padding=padding, bias=bias)
    native.load_state_dict(sliced.state_dict())
    x1 = torch.randn(2, 3, 9, 8, 7, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = sliced(x1), native(x2)
    assert y1.shape == y2.shape and torch.allclose(y1, y2, atol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4)
    assert torch.allclose(sliced.weight.grad, native.weight.grad, atol=1e-4)


@pytest.mark.parametrize('kernel,stride,padding', [((3, 3, 1), 1, (1, 1, 0)),
                                                   ((2, 2, 1), (2, 2, 1), 0)])
def test_sliced_conv_transpose3d_equals_conv_transpose3d(kernel, stride, padding):
    from trackocc.models.layers.sliced_conv3d import SlicedConvTranspose3d
    torch.manual_seed(0)
    sliced = SlicedConvTranspose3d(4, 3, kernel, stride=stride, padding=padding)
    native = torch.nn.ConvTranspose3d(4, 3, kernel, stride=stride, padding=padding)
    native.load_state_dict(sliced.state_dict())
    x1 = torch.randn(2, 4, 5, 6, 3, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = sliced(x1), native(x2)
    assert y1.shape == y2.shape and torch.allclose(y1, y2, atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4)
    assert torch.allclose(sliced.weight.grad, native.weight.grad, atol=1e-4)


def test_backbone_init_is_kaiming_normal_fan_out():
    backbone = MODELS.build(dict(type='CustomResNet3D', numC_input=8, num_layer=[1, 1, 1],
                                 num_channels=[8, 16, 32], stride=[1, 2, 2]))
    conv = backbone.layers[2][0].conv2
    torch.nn.init.zeros_(conv.weight)
    backbone.init_weights()
    fan_out = conv.weight.shape[0] * 27
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)
