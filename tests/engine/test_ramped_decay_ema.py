"""RampedDecayEMA (the reference's EMA decay ramp) and InitialWeightsEMAHook (averaging from the
weights training starts with), checked against the reference's update rule written out here."""
import math
import types

import pytest
import torch
from mmengine.registry import DefaultScope
from mmengine.registry import HOOKS as MMENGINE_HOOKS

from trackocc.engine.averaged_models import RampedDecayEMA
from trackocc.engine.hooks.initial_weights_ema_hook import InitialWeightsEMAHook


@pytest.fixture(autouse=True)
def mmdet3d_scope():
    """EMAHook builds ``ema_type`` from MMEngine's MODELS: under the configs' default scope
    (``mmdet3d``) it finds the averaged models trackocc registers there."""
    with DefaultScope.overwrite_default_scope('trackocc'):
        yield


def reference_decay(update: int, decay=0.999, init_updates=10560) -> float:
    """The reference's decay at its update counter (init_updates + k for the k-th update)."""
    return decay * (1 - math.exp(-(init_updates + update) / 2000))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.bn = torch.nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.fc(x))


def perturb(model: Net, step: int) -> None:
    """A deterministic 'optimizer step' and BN statistics update."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(0.1 * (step + 1) * (i + 1))
    model.train()
    model(torch.full((4, 3), float(step)) + torch.arange(4.)[:, None])


def test_decay_sequence_follows_the_reference_formula():
    ema = RampedDecayEMA(Net(), decay=0.999, init_updates=10560, ramp_updates=2000)
    assert ema.decay_at(1) == pytest.approx(0.9939152, abs=1e-7)  # ~0.994 at the first update
    for k in (1, 2, 10, 1000, 50000):
        assert ema.decay_at(k) == pytest.approx(reference_decay(k), rel=1e-12)
    assert ema.decay_at(10 ** 7) == pytest.approx(0.999, rel=1e-9)
    with pytest.raises(ValueError, match='decay'):
        RampedDecayEMA(Net(), decay=1.0)


def test_average_of_parameters_and_bn_buffers():
    torch.manual_seed(0)
    model = Net()
    ema = RampedDecayEMA(model, decay=0.999, init_updates=10560, ramp_updates=2000)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    ema.update_parameters(model)  # steps == 0: a copy (BaseAveragedModel)
    for step in range(1, 6):
        perturb(model, step)
        ema.update_parameters(model)
        d = reference_decay(step)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = d * expected[k] + (1 - d) * v
    got = ema.module.state_dict()
    for k in ('fc.weight', 'fc.bias', 'bn.weight', 'bn.running_mean', 'bn.running_var'):
        assert torch.allclose(got[k], expected[k], rtol=1e-5, atol=1e-6), k
        assert not torch.equal(got[k], model.state_dict()[k]), k  # averaged, not copied
    # integer buffers are not averaged: they keep the first copy
    assert int(got['bn.num_batches_tracked']) == 0
    assert int(model.bn.num_batches_tracked) == 5


def fake_runner(model, it=0):
    return types.SimpleNamespace(model=model, iter=it, epoch=0, max_iters=100, max_epochs=1)


def test_hook_averages_from_the_initial_weights():
    torch.manual_seed(0)
    model = Net()
    hook = InitialWeightsEMAHook(ema_type='RampedDecayEMA', decay=0.999, init_updates=10560)
    runner = fake_runner(model)
    hook.before_run(runner)
    with torch.no_grad():  # weight init / load_from happen after before_run
        model.fc.weight.fill_(1.0)
    w0 = model.fc.weight.clone()
    hook.before_train(runner)
    perturb(model, 0)  # first optimizer step
    hook.after_train_iter(runner, 0)
    d1 = reference_decay(1)
    assert torch.allclose(hook.ema_model.module.fc.weight, d1 * w0 + (1 - d1) * model.fc.weight)
    assert int(hook.ema_model.steps) == 2
    # plain EMAHook would hold the weights after the first step instead
    plain = MMENGINE_HOOKS.build(dict(type='EMAHook', ema_type='RampedDecayEMA'))
    plain.before_run(runner)
    plain.before_train(runner)
    plain.after_train_iter(runner, 0)
    assert torch.equal(plain.ema_model.module.fc.weight, model.fc.weight)


def test_hook_keeps_a_resumed_average():
    model = Net()
    hook = InitialWeightsEMAHook(ema_type='RampedDecayEMA')
    runner = fake_runner(model)
    hook.before_run(runner)
    with torch.no_grad():
        hook.ema_model.module.fc.weight.fill_(7.0)
    hook.ema_model.steps.fill_(300)  # restored by after_load_checkpoint
    hook.before_train(runner)
    assert int(hook.ema_model.steps) == 300
    assert torch.all(hook.ema_model.module.fc.weight == 7.0)


def test_paper_config_hook_builds_through_the_registries():
    from mmengine.config import Config
    cfg = Config.fromfile('configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py')
    assert cfg.default_scope == 'trackocc'
    (hook_cfg, ) = cfg.custom_hooks
    from trackocc.registry import HOOKS
    hook_cfg = dict(hook_cfg)
    assert hook_cfg.pop('priority') == 49  # taken by the runner's register_custom_hooks
    hook = HOOKS.build(hook_cfg)
    hook.before_run(fake_runner(Net()))
    assert isinstance(hook, InitialWeightsEMAHook)
    assert isinstance(hook.ema_model, RampedDecayEMA)
    assert hook.ema_model.update_buffers
    assert hook.ema_model.decay_at(1) == pytest.approx(reference_decay(1), rel=1e-12)


@pytest.mark.parametrize('ema_type', ['RampedDecayEMA', 'MultiTensorExpMomentumEMA'])
@pytest.mark.parametrize('update_buffers,interval', [(True, 1), (False, 2)])
def test_multi_tensor_update_equals_the_per_tensor_rule(ema_type, update_buffers, interval):
    """The averaged update runs over lists of tensors (``_FOREACH_CHUNK`` at a time); every
    entry must equal the per-tensor rule (``RampedDecayEMA.avg_func``; mmdet's
    ``ExpMomentumEMA.avg_func`` for ``MultiTensorExpMomentumEMA``) applied tensor by tensor,
    bit for bit, over more tensors than one chunk, in fp32 and fp16, integer buffers
    untouched."""
    from mmdet.models.layers import ExpMomentumEMA

    from trackocc.engine.averaged_models import MultiTensorExpMomentumEMA
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[Net() for _ in range(40)], torch.nn.Linear(2, 2).half())
    if ema_type == 'RampedDecayEMA':
        ema = RampedDecayEMA(model, decay=0.99, init_updates=0, ramp_updates=10,
                             interval=interval, update_buffers=update_buffers)
        rule = ema.avg_func
    else:
        ema = MultiTensorExpMomentumEMA(model, momentum=0.01, gamma=3, interval=interval,
                                        update_buffers=update_buffers)
        reference = ExpMomentumEMA(model, momentum=0.01, gamma=3)
        rule = reference.avg_func
    assert len(ema.avg_parameters) > 128
    ema.update_parameters(model)  # the copy
    manual = {k: v.clone() for k, v in ema.avg_parameters.items()}
    for step in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            for name, b in model.named_buffers():
                if b.dtype.is_floating_point:
                    b.add_(torch.rand_like(b))
        ema.update_parameters(model)
        if step % interval == 0:
            source = model.state_dict() if update_buffers else dict(model.named_parameters())
            for k, v in manual.items():
                if v.dtype.is_floating_point:
                    rule(v, source[k], torch.tensor(step))
    for k, v in ema.avg_parameters.items():
        assert torch.equal(v, manual[k]), k
    if not update_buffers:  # buffers are copied from the source
        for b_avg, b_src in zip(ema.module.buffers(), model.buffers()):
            assert torch.equal(b_avg, b_src)
    assert int(ema.steps) == 5


def _one_update_decay(ema, model) -> float:
    """The decay ``ema``'s next update applies, read back from fc.weight."""
    before = ema.module.fc.weight.detach().clone()
    source = model.fc.weight.detach()
    ema.update_parameters(model)
    after = ema.module.fc.weight.detach()
    return float(((after - source) / (before - source)).mean())


def test_step_counter_is_kept_on_the_host_and_follows_writes(monkeypatch):
    """The update count is read from the ``steps`` buffer once, then counted on the host (no
    device wait per update on CUDA); a write to the buffer by someone else (a hook's
    ``fill_``, a checkpoint load) is read again at the next update."""
    torch.manual_seed(0)
    model = Net()
    ema = RampedDecayEMA(model, decay=0.9, init_updates=0, ramp_updates=3.0)
    reads = []
    as_int = torch.Tensor.__int__
    monkeypatch.setattr(torch.Tensor, '__int__', lambda t: reads.append(1) or as_int(t))
    ema.update_parameters(model)  # steps 0: the copy
    for step in (1, 2, 3):
        with torch.no_grad():
            model.fc.weight.add_(1.0)
        assert _one_update_decay(ema, model) == pytest.approx(ema.decay_at(step), rel=1e-4)
    assert len(reads) == 1 and ema.host_steps() == 4 and as_int(ema.steps) == 4
    ema.steps.fill_(40)  # e.g. InitialWeightsEMAHook, or a resumed count
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert _one_update_decay(ema, model) == pytest.approx(ema.decay_at(40), rel=1e-4)
    assert len(reads) == 2 and as_int(ema.steps) == 41
    other = RampedDecayEMA(Net(), decay=0.9, init_updates=0, ramp_updates=3.0)
    other.steps.fill_(7)
    ema.load_state_dict(other.state_dict())
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert _one_update_decay(ema, model) == pytest.approx(ema.decay_at(7), rel=1e-4)
    assert len(reads) == 3 and as_int(ema.steps) == 8
    # a new steps tensor (e.g. moved to another device) whose version counter happens to
    # equal the cached one: read again all the same
    replaced = torch.full_like(ema.steps, 20)
    while replaced._version < ema.steps._version:
        replaced.add_(0)
    assert replaced._version == ema.steps._version
    ema.steps = replaced
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert _one_update_decay(ema, model) == pytest.approx(ema.decay_at(20), rel=1e-4)
    assert len(reads) == 4 and as_int(ema.steps) == 21


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_updates_do_not_wait_for_the_device_on_cuda():
    model = Net().cuda()
    ema = RampedDecayEMA(model)
    ema.update_parameters(model)  # the first read of the counter
    torch.cuda.set_sync_debug_mode('error')
    try:
        for _ in range(3):
            ema.update_parameters(model)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert int(ema.steps) == 4


class _WithExtras(Net):
    """Net with a non-persistent buffer (not in the state dict) and a shared sub-module."""

    def __init__(self):
        super().__init__()
        self.register_buffer('scratch', torch.zeros(2), persistent=False)
        self.again = self.fc  # the same Linear under a second name


@pytest.mark.parametrize('update_buffers', [True, False])
def test_source_tensors_are_the_state_dicts_without_walking_it(update_buffers, monkeypatch):
    torch.manual_seed(0)
    model = _WithExtras()
    ema = RampedDecayEMA(model, update_buffers=update_buffers)
    expected = model.state_dict() if update_buffers else dict(model.named_parameters())
    # the state dict repeats the shared Linear ('again.weight'), named_parameters does not;
    # neither holds the non-persistent buffer
    assert list(ema.avg_parameters) == list(expected)
    assert ('again.weight' in expected) == update_buffers and 'scratch' not in expected
    # found in the modules: state_dict() is not called
    monkeypatch.setattr(torch.nn.Module, 'state_dict', lambda *a, **k: pytest.fail('walked'))
    got = ema.source_tensors(model)
    assert [t.data_ptr() for t in got] == [expected[k].data_ptr() for k in ema.avg_parameters]
    assert ema.source_tensors(model)[0] is got[0]  # found once, read again
    if update_buffers:  # a buffer replaced by a new tensor is read from its module
        model.bn.running_mean = torch.full((2, ), 7.0)
        index = list(ema.avg_parameters).index('bn.running_mean')
        assert ema.source_tensors(model)[index] is model.bn.running_mean
    # a sub-module replaced: its owner found again
    model.fc = torch.nn.Linear(3, 2)
    got = dict(zip(ema.avg_parameters, ema.source_tensors(model)))
    assert got['fc.weight'] is model.fc.weight
    assert got.get('again.weight', model.again.weight) is model.again.weight


def test_source_tensors_fall_back_to_the_state_dict_for_other_keys():
    class Renamed(Net):  # a state-dict hook adds a key no module holds
        def __init__(self):
            super().__init__()
            self._register_state_dict_hook(
                lambda module, state, prefix, local: state.__setitem__(
                    prefix + 'fc_scale', module.fc.weight.detach().abs().sum().reshape(1)))

    torch.manual_seed(0)
    model = Renamed()
    ema = RampedDecayEMA(model, update_buffers=True)
    assert 'fc_scale' in ema.avg_parameters
    got = dict(zip(ema.avg_parameters, ema.source_tensors(model)))
    assert torch.equal(got['fc_scale'], model.fc.weight.abs().sum().reshape(1))
    assert got['bn.running_var'].data_ptr() == model.bn.running_var.data_ptr()
