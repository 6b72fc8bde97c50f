"""MergedGroupsOptimWrapperConstructor: the default's param-wise settings in one group per
setting, the same updates, and a clear refusal of optimizer states grouped otherwise."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from trackocc.engine.optim_constructors import merge_equal_groups


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.img_backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
        self.head = nn.Module()
        self.head.sampling_offsets = nn.Linear(4, 6)
        self.head.fc = nn.Linear(4, 4)
        self.head.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _wrapper(model, constructor, foreach=None):
    init_default_scope('trackocc')
    cfg = dict(type='OptimWrapper',
               optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05, foreach=foreach),
               paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.5, custom_keys={
                   'img_backbone': dict(lr_mult=0.1), 'sampling_offsets': dict(lr_mult=0.1)}),
               clip_grad=dict(max_norm=0.5, norm_type=2))
    if constructor is not None:
        cfg['constructor'] = constructor
    return build_optim_wrapper(model, cfg)


def _settings(optimizer):
    """Each parameter's group settings, by parameter."""
    return {id(p): {k: v for k, v in g.items() if k != 'params'}
            for g in optimizer.param_groups for p in g['params']}


def test_merge_equal_groups_keeps_order_and_settings():
    a, b, c, d = (torch.zeros(1) for _ in range(4))
    groups = [dict(params=[a], lr=1.0), dict(params=[b], lr=0.1), dict(params=[c], lr=1.0),
              dict(params=[d], lr=0.1, weight_decay=0.0)]
    merged = merge_equal_groups(groups)
    assert [g['lr'] for g in merged] == [1.0, 0.1, 0.1]
    assert [len(g['params']) for g in merged] == [2, 1, 1]
    assert merged[0]['params'][0] is a and merged[0]['params'][1] is c
    assert 'weight_decay' not in merged[1] and merged[2]['weight_decay'] == 0.0
    assert len(groups[0]['params']) == 1  # the input is left as it was


@pytest.mark.parametrize('foreach', [False, True])
def test_merged_groups_give_the_default_constructors_updates(foreach):
    torch.manual_seed(0)
    model = _Net()
    twin = copy.deepcopy(model)
    default = _wrapper(model, None, foreach)
    merged = _wrapper(twin, 'MergedGroupsOptimWrapperConstructor', foreach)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(default.optimizer.param_groups) == len(trainable)  # one per parameter
    # the custom keys' parameters (lr x 0.1; MMEngine applies no norm / bias rule to them),
    # then the head's weights, biases (decay x 0.5) and norms (decay 0)
    assert len(merged.optimizer.param_groups) == 4
    by_name = dict(zip((n for n, _ in model.named_parameters()), model.parameters()))
    twin_by_name = dict(twin.named_parameters())
    s_default, s_merged = _settings(default.optimizer), _settings(merged.optimizer)
    for name, p in by_name.items():
        if p.requires_grad:
            assert s_default[id(p)] == s_merged[id(twin_by_name[name])], name
        else:
            assert id(twin_by_name[name]) not in s_merged
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in trainable]
        for ow, net in ((default, model), (merged, twin)):
            for p, grad in zip((q for q in net.parameters() if q.requires_grad), grads):
                p.grad = grad.clone()
            ow.step()
            ow.zero_grad()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), name


def test_merged_groups_resume_and_refuse_other_groupings():
    model = _Net()
    merged = _wrapper(model, 'MergedGroupsOptimWrapperConstructor')
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    merged.step()
    again = _wrapper(copy.deepcopy(model), 'MergedGroupsOptimWrapperConstructor')
    again.load_state_dict(merged.state_dict())
    assert again.optimizer.state_dict()['state'].keys() == \
        merged.optimizer.state_dict()['state'].keys()
    default = _wrapper(copy.deepcopy(model), None)
    default.step()
    with pytest.raises(ValueError, match='DefaultOptimWrapperConstructor'):
        _wrapper(model, 'MergedGroupsOptimWrapperConstructor').load_state_dict(
            default.state_dict())


def test_paper_schedule_uses_merged_groups():
    from mmengine.config import Config
    cfg = Config.fromfile('configs/_base_/schedules/constant-24e.py')
    assert cfg.optim_wrapper.constructor == 'MergedGroupsOptimWrapperConstructor'
