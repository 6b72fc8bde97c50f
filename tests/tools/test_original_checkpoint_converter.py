"""Converter of the original TrackOcc's checkpoints (tools/model_converters/
trackocc_original_to_mmengine.py, trackocc/utils/original_checkpoint.py).

The original's key names and shapes come from tests/data/original_tiny_keys.json, written by
tools/model_converters/dump_original_keys.py from the original's own model code (its config
at the sizes of configs/trackocc/trackocc_tiny_synthetic.py).
"""
import json
import os.path as osp
import sys
from collections import OrderedDict

import pytest
import torch
from torch import nn

from trackocc.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope
from trackocc.models.layers.mask_feature_upsampler import MaskFeatureUpsampler
from trackocc.utils.original_checkpoint import (OriginalCheckpointError, check_against_model,
                                                convert_state_dict, select_state_dict,
                                                strip_wrapper_prefixes)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
KEYS_JSON = osp.join(REPO, 'tests/data/original_tiny_keys.json')
TINY_CONFIG = osp.join(REPO, 'configs/trackocc/trackocc_tiny_synthetic.py')
ORIGINAL_WEIGHTS_CONFIG = osp.join(
    REPO, 'configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ_original-weights.py')
sys.path.insert(0, osp.join(REPO, 'tools/model_converters'))
import trackocc_original_to_mmengine as tool  # noqa: E402


def original_state_dict(seed=0):
    """A state dict in the original's layout (keys and shapes of its tiny model) with random
    values; BN variances positive, batch counters integer."""
    with open(KEYS_JSON) as f:
        keys = json.load(f)['keys']
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for name, shape in keys.items():
        if name.endswith('num_batches_tracked'):
            sd[name] = torch.tensor(7)
        elif name.endswith('running_var'):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=g)
    return sd


def build_model(config):
    cfg = Config.fromfile(config)
    with DefaultScope.overwrite_default_scope('trackocc'):
        return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def tiny_model():
    return build_model(TINY_CONFIG)


def test_every_original_key_is_accounted_for_and_loads_strictly(tiny_model):
    sd = original_state_dict()
    result = convert_state_dict(sd)
    assert set(result.mapped) | set(result.folded) | set(result.dropped) == set(sd)
    assert set(result.dropped) == {'criterion.code_weights'}
    assert len(result.folded) == 4  # up0 / up1, two transposed convs each
    check_against_model(result.state_dict, tiny_model.state_dict())
    tiny_model.load_state_dict(result.state_dict, strict=True)
    # values travel with their names
    pairs = {'query_interact.linear_feat1.weight': 'query_interaction.ffn_feat.layers.0.0.weight',
             'memory_bank.temporal_attn.in_proj_weight':
             'memory_bank.temporal_attn.attn.in_proj_weight',
             'pts_bbox_head.ref3d_predictor.bias': 'pts_bbox_head.stuff_ref_predictor.bias',
             'pts_bbox_head.transformer.encoder.layers.0.attentions.1.deformable_attention.'
             'sampling_offsets.weight':
             'occ_encoder.layers.0.cross_attn.deformable_attention.sampling_offsets.weight',
             'volume_encoder_backbone.layers.1.0.conv2.bn.running_var':
             'volume_encoder_backbone.layers.1.0.bn2.running_var',
             'img_view_transformer.depth_net.depth_conv.3.aspp3.atrous_conv.weight':
             'img_view_transformer.depth_net.depth_conv.3.branches.2.0.weight',
             'img_view_transformer.depth_net.depth_conv.3.bn1.running_mean':
             'img_view_transformer.depth_net.depth_conv.3.fuse.1.running_mean'}
    model_sd = tiny_model.state_dict()
    for src, dst in pairs.items():
        assert torch.equal(model_sd[dst], sd[src]), (src, dst)
    torch.testing.assert_close(
        model_sd['occ_encoder.upsampler.up1.1.bn.running_mean'],
        sd['pts_bbox_head.up1.4.running_mean'] - sd['pts_bbox_head.up1.3.bias'])


def test_unknown_and_missing_keys_are_named(tiny_model):
    sd = original_state_dict()
    sd['pts_bbox_head.aux_head.weight'] = torch.zeros(3)
    with pytest.raises(OriginalCheckpointError, match=r'pts_bbox_head\.aux_head\.weight'):
        convert_state_dict(sd, source='x.pth')
    sd = original_state_dict()
    del sd['memory_bank.temporal_fc2.bias']
    result = convert_state_dict(sd)
    with pytest.raises(OriginalCheckpointError, match=r'memory_bank\.ffn\.layers\.1\.bias'):
        check_against_model(result.state_dict, tiny_model.state_dict())
    sd = original_state_dict()
    sd['pts_bbox_head.cls_embed.weight'] = torch.zeros(3, 3)
    with pytest.raises(OriginalCheckpointError, match=r'shape.*cls_embed\.weight'):
        check_against_model(convert_state_dict(sd).state_dict, tiny_model.state_dict())
    sd = original_state_dict()
    del sd['pts_bbox_head.up0.1.running_mean']
    with pytest.raises(OriginalCheckpointError, match=r'up0\.0\.bias.*up0\.0\.bn\.running_mean'):
        convert_state_dict(sd)


def test_wrappers_prefixes_and_ema_containers():
    sd = original_state_dict()
    wrapped = OrderedDict(('module.' + k, v) for k, v in sd.items())
    assert list(strip_wrapper_prefixes(wrapped)) == list(sd)
    assert list(strip_wrapper_prefixes({'teacher.module.a': torch.zeros(1)})) == ['a']
    with pytest.raises(OriginalCheckpointError, match=r"'module\.a'.*collides"):
        strip_wrapper_prefixes(OrderedDict(a=torch.zeros(1), **{'module.a': torch.zeros(1)}))
    mmcv_ckpt = dict(meta=dict(iter=94848, mmcv_version='1.6.0'), state_dict=sd, optimizer={})
    got, info = select_state_dict(mmcv_ckpt)
    assert got is not sd and list(got) == list(sd)
    assert info['format'] == 'mmcv' and not info['ema'] and info['meta']['iter'] == 94848
    with pytest.raises(OriginalCheckpointError, match='iter_N_ema.pth'):
        select_state_dict(mmcv_ckpt, ema=True)
    with pytest.raises(OriginalCheckpointError, match='plain state dict'):
        select_state_dict(sd, ema=True)
    megvii = dict(iter=94847, state_dict=sd, updates=105407)  # MEGVIIEMAHook.save_checkpoint_iter
    for ema in (False, True):
        _, info = select_state_dict(megvii, ema=ema)
        assert info['format'] == 'megvii_ema' and info['ema'] and info['updates'] == 105407
    ema_sd = OrderedDict((k, v + 1) for k, v in sd.items())
    both = dict(state_dict=sd, ema_state_dict=ema_sd)
    got, info = select_state_dict(both, ema=True)
    assert info['ema'] and torch.equal(got['query_embedding.weight'],
                                       ema_sd['query_embedding.weight'])
    got, info = select_state_dict(both)
    assert not info['ema'] and info['ema_available']
    assert torch.equal(got['query_embedding.weight'], sd['query_embedding.weight'])
    with pytest.raises(OriginalCheckpointError, match='not tensors: a'):
        select_state_dict(dict(state_dict=dict(a=1)))


def test_tool_end_to_end(tmp_path, capsys, tiny_model):
    sd = original_state_dict()
    src = tmp_path / 'trackocc_orig.pth'
    torch.save(dict(meta=dict(iter=10, mmcv_version='1.6.0', config='x' * 100),
                    state_dict=OrderedDict(('module.' + k, v) for k, v in sd.items())), src)
    out = tmp_path / 'converted.pth'
    assert tool.main([str(src), str(out), '--config', TINY_CONFIG]) == 0
    assert 'dropped criterion.code_weights' in capsys.readouterr().out
    ckpt = torch.load(out, weights_only=True)
    assert ckpt['meta']['source_format'] == 'mmcv'
    assert ckpt['meta']['original_meta'] == dict(iter=10, mmcv_version='1.6.0')
    tiny_model.load_state_dict(ckpt['state_dict'], strict=True)
    assert not list(tmp_path.glob('.*tmp*'))
    # EMA file of the original's hook, with --ema
    ema_src = tmp_path / 'iter_10_ema.pth'
    torch.save(dict(iter=10, state_dict=sd, updates=10570), ema_src)
    assert tool.main([str(ema_src), str(out), '--ema', '--config', TINY_CONFIG]) == 0
    assert torch.load(out, weights_only=True)['meta']['ema_updates'] == 10570
    # errors name the file and the problem; the output is left alone
    before = out.read_bytes()
    assert tool.main([str(src), str(out), '--ema', '--config', TINY_CONFIG]) == 1
    assert 'no EMA weights' in capsys.readouterr().err
    bad = tmp_path / 'bad.pth'
    torch.save(dict(state_dict=OrderedDict(sd, **{'pts_bbox_head.extra.bias': torch.zeros(2)})),
               bad)
    assert tool.main([str(bad), str(out), '--config', TINY_CONFIG]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and 'pts_bbox_head.extra.bias' in err
    assert out.read_bytes() == before


def _original_up_block(cin, cout):
    """The original head's up0 / up1: two transposed convs with bias, each before BN."""
    return nn.Sequential(
        nn.ConvTranspose3d(cin, cout, (3, 3, 1), padding=(1, 1, 0)), nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
        nn.ConvTranspose3d(cout, cout, (2, 2, 1), stride=(2, 2, 1)), nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True))


@pytest.mark.parametrize('training', [False, True])
def test_folded_deconv_bias_gives_the_same_output(training):
    """conv(+b) -> BN (running mean m) equals conv -> BN (running mean m - b)."""
    torch.manual_seed(0)
    c = 4
    orig = nn.ModuleDict(dict(up0=_original_up_block(5 * c, 2 * c),
                              up1=_original_up_block(4 * c, 2 * c)))
    for m in orig.modules():
        if isinstance(m, nn.BatchNorm3d):
            nn.init.normal_(m.running_mean, 0, 2)
            nn.init.uniform_(m.running_var, 0.5, 2)
            nn.init.normal_(m.weight, 1, 0.2)
            nn.init.normal_(m.bias, 0, 0.5)
        elif isinstance(m, nn.ConvTranspose3d):
            nn.init.normal_(m.bias, 0, 1.5)
    ours = MaskFeatureUpsampler(in_channels=c, out_channels=8)
    sd = OrderedDict(('pts_bbox_head.' + k, v) for k, v in orig.state_dict().items())
    result = convert_state_dict(sd)
    assert len(result.folded) == 4
    prefix = 'occ_encoder.upsampler.'
    missing = ours.load_state_dict(
        {k[len(prefix):]: v for k, v in result.state_dict.items()}, strict=False).missing_keys
    assert all(k.startswith('final_conv') for k in missing)
    orig.train(training)
    ours.train(training)
    x = torch.randn(2, 5 * c, 3, 3, 2)
    with torch.no_grad():
        want, got = orig['up0'](x), ours.up0(x)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if training:  # the running statistics keep tracking the same thing
        torch.testing.assert_close(ours.up0[1].bn.running_mean,
                                   orig['up0'][4].running_mean - orig['up0'][3].bias)


def test_original_weights_config_sets_the_switches():
    model = build_model(ORIGINAL_WEIGHTS_CONFIG)
    layer = model.pts_bbox_head.decoder.layers[0]
    assert layer.self_attn_residual == 'cross_attn_out' and layer.cross_attn.legacy_axis_order
    assert all(enc.self_attn.legacy_axis_order for enc in model.occ_encoder.layers)
    assert model.img_view_transformer.legacy_voxel_index
    assert model.data_preprocessor.swap_rb
    assert Config.fromfile(ORIGINAL_WEIGHTS_CONFIG).model.img_backbone.init_cfg is None
