"""The paper schedule's fused AdamW: the multi-tensor AdamW's update up to float rounding, a
loss-scaler step that reads nothing back to the host, non-finite gradients skipped, and
optimizer states that move between the two forms."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from host_reads import HostReads

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCHEDULE = osp.join(ROOT, 'configs', '_base_', 'schedules', 'constant-24e.py')


class _Net(nn.Module):
    """Parameters under both of the schedule's settings (the image backbone at lr x 0.1)."""

    def __init__(self):
        super().__init__()
        self.img_backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.LayerNorm(8),
                                  nn.Linear(8, 1))

    def forward(self, x):
        return self.head(self.img_backbone(x)).square().mean()


def _schedule_wrapper(model, **optimizer):
    """The paper schedule's optimizer wrapper as a plain ``OptimWrapper`` (MMEngine's
    ``AmpOptimWrapper`` needs a GPU), with ``optimizer`` settings overridden."""
    init_default_scope('trackocc')
    cfg = Config.fromfile(SCHEDULE).optim_wrapper.to_dict()
    for key in ('loss_scale', 'dtype'):
        cfg.pop(key, None)
    cfg['type'] = 'OptimWrapper'
    cfg['optimizer'].update(optimizer)
    return build_optim_wrapper(model, cfg)


def _train(wrapper, model, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        wrapper.update_params(model(torch.randn(2, 3, 8, 8, generator=g)))


def test_the_paper_schedule_steps_a_fused_adamw_with_the_multi_tensor_update():
    torch.manual_seed(0)
    model = _Net()
    twin = copy.deepcopy(model)
    fused = _schedule_wrapper(model)
    foreach = _schedule_wrapper(twin, fused=False, foreach=True)
    assert fused.optimizer.defaults['fused'] is True
    assert [g['lr'] for g in fused.optimizer.param_groups] == [2e-5, 2e-4]
    assert fused.clip_grad_kwargs == dict(max_norm=35, norm_type=2)
    start = [p.detach().clone() for p in model.parameters()]
    _train(fused, model, 6)
    _train(foreach, twin, 6)
    for p, q, p0 in zip(model.parameters(), twin.parameters(), start):
        assert not torch.equal(p, p0)  # every parameter moved ...
        # ... as the multi-tensor AdamW moved it, up to float rounding (an update is ~lr)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-8)


def _scaled_step(optimizer, scaler, model, grad_fill=None):
    """AmpOptimWrapper's update on the CPU: backward of the scaled loss, unscale, clip, then
    the scaler's step and update, counted; returns the host reads of step + update."""
    optimizer.zero_grad()
    scaler.scale(model(torch.randn(2, 3, 8, 8))).backward()
    if grad_fill is not None:
        next(model.parameters()).grad.fill_(grad_fill)
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 35)
    counter = HostReads()
    with counter:
        scaler.step(optimizer)
        scaler.update()
    return counter.reads


@pytest.mark.parametrize('fused', [True, False])
def test_the_loss_scalers_step_reads_nothing_back_with_the_fused_adamw(fused):
    torch.manual_seed(0)
    model = _Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused,
                                  foreach=None if fused else True)
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    reads = [_scaled_step(optimizer, scaler, model) for _ in range(3)]
    if fused:  # the inf check goes into the kernel as a tensor
        assert reads == [0, 0, 0]
    else:  # the scaler reads its inf flag (and AdamW its step counts) on the host
        assert all(r >= 1 for r in reads)


def test_the_fused_step_skips_non_finite_gradients_on_the_device():
    torch.manual_seed(0)
    model = _Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    _scaled_step(optimizer, scaler, model)
    before = [p.detach().clone() for p in model.parameters()]
    steps = [s['step'].clone() for s in optimizer.state.values()]
    assert _scaled_step(optimizer, scaler, model, grad_fill=float('inf')) == 0
    for p, p0 in zip(model.parameters(), before):
        assert torch.equal(p, p0)
    assert [s['step'] for s in optimizer.state.values()] == steps  # the step is not counted
    assert scaler.get_scale() == 512.0
    _scaled_step(optimizer, scaler, model)  # finite again: it moves
    assert not all(torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))


@pytest.mark.parametrize('saved_fused', [False, True])
def test_an_optimizer_state_moves_between_the_multi_tensor_and_fused_forms(saved_fused):
    torch.manual_seed(0)
    model = _Net()
    saver = _schedule_wrapper(model, fused=saved_fused, foreach=None if saved_fused else True)
    _train(saver, model, 3)
    state = copy.deepcopy(saver.state_dict())
    resumed_model, same_model = copy.deepcopy(model), copy.deepcopy(model)
    resumed = _schedule_wrapper(resumed_model, fused=not saved_fused,
                                foreach=True if saved_fused else None)
    resumed.load_state_dict(state)
    same = _schedule_wrapper(same_model, fused=saved_fused,
                             foreach=None if saved_fused else True)
    same.load_state_dict(copy.deepcopy(state))
    _train(resumed, resumed_model, 3, seed=2)
    _train(same, same_model, 3, seed=2)
    for p, q in zip(resumed_model.parameters(), same_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-8)
    assert all(int(s['step']) == 6 for s in resumed.optimizer.state.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_the_paper_schedules_amp_step_does_not_wait_for_the_gpu():
    init_default_scope('trackocc')
    torch.manual_seed(0)
    model = _Net().cuda()
    cfg = Config.fromfile(SCHEDULE).optim_wrapper.to_dict()
    cfg['dtype'] = 'bfloat16'
    wrapper = build_optim_wrapper(model, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    for i in range(3):
        with wrapper.optim_context(model):
            loss = model(torch.randn(2, 3, 8, 8, device='cuda'))
        wrapper.backward(loss)
        wrapper.loss_scaler.unscale_(wrapper.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35)  # MMEngine's logs a float
        # the first step makes AdamW's state (its step counts from Python numbers)
        torch.cuda.set_sync_debug_mode('error' if i else 'default')
        try:
            wrapper.loss_scaler.step(wrapper.optimizer)
            wrapper.loss_scaler.update()
        finally:
            torch.cuda.set_sync_debug_mode('default')
        wrapper.zero_grad()
    assert all(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))
