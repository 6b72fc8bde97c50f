"""tools/model_converters/publish_model.py: weights only, EMA or trained, dtype, hashed name."""
import hashlib
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.runner.checkpoint import load_checkpoint

from repo_files import REPO, load_module
from trackocc.registry import MODELS

pm = load_module(osp.join(REPO, 'tools', 'model_converters', 'publish_model.py'),
                 '_publish_model')


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.fixture
def training_ckpt(tmp_path):
    """A checkpoint as mmengine's CheckpointHook writes it with an EMA hook."""
    model = small_model()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optim = torch.optim.AdamW(model.parameters())
    optim.step()
    ema = {'steps': torch.tensor(7)}
    ema.update({f'module.{k}': (v + 1 if v.is_floating_point() else v)
                for k, v in model.state_dict().items()})
    hub = MessageHub.get_instance('publish_model_test')
    hub.update_scalar('train/loss', 1.5)
    path = str(tmp_path / 'iter_7.pth')
    torch.save(dict(meta=dict(iter=7, seed=0), state_dict=model.state_dict(),
                    message_hub=hub.state_dict(),
                    optimizer=optim.state_dict(), ema_state_dict=ema,
                    param_schedulers=[dict(last_step=7)]), path)
    return path, model


def sha8(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()[:8]


def test_weights_only_with_the_hash_in_the_name(training_ckpt, tmp_path, capsys):
    src, model = training_ckpt
    pm.main([src, str(tmp_path / 'out' / 'small.pth')])
    (final, ) = (tmp_path / 'out').iterdir()
    assert final.name == f'small-{sha8(final)}.pth'
    assert str(final) in capsys.readouterr().out
    ckpt = torch.load(final, weights_only=True)
    assert sorted(ckpt) == ['meta', 'state_dict']
    assert ckpt['meta']['iter'] == 7
    assert ckpt['meta']['published'] == dict(source='iter_7.pth', ema=False, dtype='fp32')
    fresh = small_model()
    for p in fresh.parameters():
        nn.init.zeros_(p)
    load_checkpoint(fresh, str(final), strict=True)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k


def test_ema_weights_in_half_precision(training_ckpt, tmp_path):
    src, model = training_ckpt
    final = pm.publish(src, str(tmp_path / 'small_ema.pth'), ema=True, dtype='bf16')
    state = torch.load(final, weights_only=True)['state_dict']
    assert 'steps' not in state and set(state) == set(model.state_dict())
    for k, v in model.state_dict().items():
        if v.is_floating_point():  # the EMA copy (trained + 1 here), stored in bf16
            assert state[k].dtype == torch.bfloat16
            assert torch.equal(state[k], (v + 1).to(torch.bfloat16)), k
        else:  # integer buffers keep their dtype and value
            assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


def test_bad_inputs_are_named(training_ckpt, tmp_path):
    src, model = training_ckpt
    plain = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict=model.state_dict()), plain)
    with pytest.raises(SystemExit, match=r'plain.pth: --ema, but the checkpoint has no '
                                         r'ema_state_dict'):
        pm.main([plain, str(tmp_path / 'x.pth'), '--ema'])
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(open(src, 'rb').read()[:100])
    with pytest.raises(SystemExit, match='cut.pth'):
        pm.main([str(cut), str(tmp_path / 'y.pth')])
    weights = str(tmp_path / 'weights.pth')
    torch.save(model.state_dict(), weights)
    with pytest.raises(SystemExit, match=r'weights.pth: not an MMEngine checkpoint'):
        pm.main([weights, str(tmp_path / 'z.pth')])
    assert not any(p.name.startswith(('x', 'y', 'z')) for p in tmp_path.iterdir())


def test_only_a_prefix_initialises_the_paper_backbone(tmp_path):
    """``--only backbone.`` of a detector checkpoint (mmdet 2.x layout: backbone, neck, heads,
    optimizer) keeps the ResNet-50 alone; the nuim-r50 learning-check config, pointed at the
    file, starts its image backbone from it and freezes the stem and first stage."""
    cfg = Config.fromfile(osp.join(
        REPO, 'configs', 'trackocc',
        'trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_nuim-r50.py'))
    backbone_cfg = cfg.model.img_backbone.copy()
    backbone_cfg.init_cfg = None
    torch.manual_seed(1)
    detector_backbone = MODELS.build(backbone_cfg)
    state = {f'backbone.{k}': v for k, v in detector_backbone.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.randn(4, 4, 1, 1)
    state['roi_head.bbox_head.0.fc_cls.weight'] = torch.randn(3, 4)
    src = str(tmp_path / 'cascade_nuim.pth')
    torch.save(dict(meta=dict(epoch=20, CLASSES=('car', 'truck')), state_dict=state,
                    optimizer=dict(state={}, param_groups=[])), src)

    final = pm.publish(src, str(tmp_path / 'nuim_r50.pth'), dtype='fp16', only='backbone.')
    published = torch.load(final, weights_only=True)
    assert published['meta']['published']['only'] == 'backbone.'
    kept = published['state_dict']
    assert set(kept) == {k for k in state if k.startswith('backbone.')}
    assert all(v.dtype == torch.float16 for v in kept.values() if v.is_floating_point())

    backbone_cfg.init_cfg = dict(cfg.model.img_backbone.init_cfg, checkpoint=final)
    torch.manual_seed(2)
    backbone = MODELS.build(backbone_cfg)
    backbone.init_weights()
    for k, v in detector_backbone.state_dict().items():
        got = backbone.state_dict()[k]
        want = v.half().to(v.dtype) if v.is_floating_point() else v
        assert got.dtype == v.dtype and torch.equal(got, want), k
    backbone.train()
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(('conv1', 'bn1', 'layer1.')) for n in frozen)
    assert all(p.requires_grad for n, p in backbone.named_parameters()
               if n.startswith(('layer2.', 'layer3.', 'layer4.')))

    with pytest.raises(SystemExit, match=r"cascade_nuim.pth: no weights under --only 'img_bb\.'"
                                         r" \(key prefixes: backbone\., neck\., roi_head\.\)"):
        pm.main([src, str(tmp_path / 'w.pth'), '--only', 'img_bb.'])
    assert not any(p.name.startswith('w') for p in tmp_path.iterdir())
