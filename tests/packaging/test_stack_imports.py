"""The real OpenMMLab stack imports and its compiled parts run on CPU."""
import pytest
import torch


def test_mmcv_ops_are_compiled_and_run_on_cpu():
    import mmcv
    from mmcv.ops import nms, MultiScaleDeformableAttention  # noqa: F401
    from mmcv.utils import ext_loader
    ext = ext_loader.load_ext('_ext', ['nms'])
    assert ext is not None and mmcv.__version__ == '2.1.0'
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_mmdet3d_models_and_datasets_import():
    import mmdet3d
    import mmdet3d.datasets  # noqa: F401
    import mmdet3d.models  # noqa: F401
    from mmdet3d.registry import MODELS
    assert mmdet3d.__version__ == '1.4.0'
    assert MODELS.get('Det3DDataPreprocessor') is not None


def test_spconv_submconv3d_native_forward_backward_on_cpu():
    spconv = pytest.importorskip('spconv.pytorch')
    from spconv.core import ConvAlgo
    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 8, (60, 3)), dim=0)
    indices = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], 1).int()
    feats = torch.randn(len(coords), 4, requires_grad=True)
    x = spconv.SparseConvTensor(feats, indices, spatial_shape=[8, 8, 8], batch_size=1)
    conv = spconv.SubMConv3d(4, 6, 3, padding=1, bias=False, indice_key='s0', algo=ConvAlgo.Native)
    out = conv(x)
    assert out.features.shape == (len(coords), 6)
    assert torch.equal(out.indices, x.indices)  # submanifold: same active sites
    out.features.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    # compare with a dense 3x3x3 convolution evaluated at the active sites
    dense = torch.zeros(1, 4, 8, 8, 8)
    c = coords.long()
    dense[0, :, c[:, 0], c[:, 1], c[:, 2]] = feats.detach().t()
    weight = conv.weight.detach()  # spconv 2.x: (out, k, k, k, in)
    ref = torch.nn.functional.conv3d(dense, weight.permute(0, 4, 1, 2, 3), padding=1)
    ref_at_sites = ref[0, :, c[:, 0], c[:, 1], c[:, 2]].t()
    order = torch.argsort(out.indices[:, 1] * 64 + out.indices[:, 2] * 8 + out.indices[:, 3])
    order_in = torch.argsort(indices[:, 1] * 64 + indices[:, 2] * 8 + indices[:, 3])
    assert torch.allclose(out.features.detach()[order], ref_at_sites[order_in], atol=1e-4)


def test_trackocc_extension_is_built_by_the_build_hook():
    """setup.py compiled ops/csrc into trackocc._ext next to the package (C++ always)."""
    from pathlib import Path

    import trackocc
    import trackocc._ext as ext
    assert Path(ext.__file__).parent == Path(trackocc.__file__).parent
    for fn in ('bev_pool_v2_forward', 'bev_pool_v2_backward', 'ms_deform_attn_3d_forward',
               'ms_deform_attn_3d_backward', 'with_cuda'):
        assert callable(getattr(ext, fn)), fn
    assert isinstance(ext.with_cuda(), bool)
    if not torch.cuda.is_available():
        assert ext.with_cuda() is False  # built without CUDA here: CUDA tensors get a clear error
