"""Training scalars logged without a host read per iteration (HostSyncFreeRuntimeInfoHook, the
HostSyncFree*OptimWrappers, DeferredScalars): the message hub, the logs and the checkpoints
hold what MMEngine's immediate reads give, and iterations between the logger's read nothing
back from the device."""
import json
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner

import trackocc.engine  # noqa: F401  (registers the hook and the wrappers)
from host_reads import HostReads
from repo_files import load_module
from trackocc.engine import DeferredScalars, HostSyncFreeRuntimeInfoHook
from trackocc.registry import HOOKS, MODELS

load_module('tests/packaging/toy_runner_parts.py', 'toy_runner_parts')  # ToyPairs

MAX_ITERS = 7


@MODELS.register_module(force=True)
class _LoggingToy(BaseModel):
    """Two loss terms and two tensors that are no loss, one of them half precision (MMEngine's
    ``parse_losses`` takes float tensors only)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.linear(torch.stack(inputs) if isinstance(inputs, list) else inputs)
        if mode != 'loss':
            return pred
        targets = torch.stack(targets) if isinstance(targets, list) else targets
        err = pred - targets
        return dict(loss_sq=err.square().mean(), loss_abs=0.1 * err.abs().mean(),
                    err_max=err.detach().abs().max().half(), positives=(err > 0).float().sum())


@HOOKS.register_module(force=True)
class _ReadsPerIteration(Hook):
    """Counts the scalar reads from the start of each training iteration to its end (after
    every other hook), in ``per_iteration``."""

    priority = 'LOWEST'

    def __init__(self):
        self.per_iteration = []
        self._mode = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._mode = HostReads()
        self._mode.__enter__()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._mode.__exit__(None, None, None)
        self.per_iteration.append(self._mode.reads)


def _config(work_dir, deferred):
    return dict(
        default_scope='trackocc',
        model=dict(type='_LoggingToy'),
        work_dir=str(work_dir),
        experiment_name=Path(work_dir).name,
        train_dataloader=dict(dataset=dict(type='ToyPairs'), batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'), num_workers=0),
        # SGD: no scalar reads of its own (AdamW reads its step counts on the CPU)
        optim_wrapper=dict(type='HostSyncFreeOptimWrapper' if deferred else 'OptimWrapper',
                           optimizer=dict(type='SGD', lr=1e-2, momentum=0.9),
                           clip_grad=dict(max_norm=1.0)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=MAX_ITERS),
        default_hooks=dict(
            runtime_info=dict(type='HostSyncFreeRuntimeInfoHook' if deferred
                              else 'RuntimeInfoHook'),
            # 5 is not a multiple of the logger's 3: the checkpoint flushes by itself
            checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5),
            logger=dict(type='LoggerHook', interval=3)),
        custom_hooks=[dict(type='_ReadsPerIteration')],
        log_processor=dict(by_epoch=False, window_size=3),
        randomness=dict(seed=0),
    )


def _train(work_dir, deferred):
    runner = Runner.from_cfg(_config(work_dir, deferred))
    runner.train()
    return runner


def _histories(hub):
    return {key: [list(map(float, b.data[0])), list(map(int, b.data[1]))]
            for key, b in hub.log_scalars.items() if key.startswith('train/')
            and key not in ('train/time', 'train/data_time')}


def _scalar_lines(work_dir):
    """The JSON log's training lines without the clock's entries."""
    log = next(Path(work_dir).glob('*/vis_data/scalars.json'))
    drop = {'time', 'data_time', 'eta', 'memory'}
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in log.read_text().splitlines()]


def _reads_hook(runner):
    return next(h for h in runner.hooks if isinstance(h, _ReadsPerIteration))


def test_deferred_logs_equal_mmengines_and_read_nothing_between_the_loggers(tmp_path):
    ref = _train(tmp_path / 'immediate', deferred=False)
    got = _train(tmp_path / 'deferred', deferred=True)

    # the hub's histories of every training scalar, the JSON log and the saved hubs: the same
    ref_hist, got_hist = _histories(ref.message_hub), _histories(got.message_hub)
    assert set(ref_hist) >= {'train/loss', 'train/loss_sq', 'train/loss_abs', 'train/err_max',
                             'train/positives', 'train/grad_norm', 'train/lr'}
    assert got_hist == ref_hist
    assert len(got_hist['train/loss'][0]) == MAX_ITERS
    assert _scalar_lines(tmp_path / 'deferred') == _scalar_lines(tmp_path / 'immediate')
    for name in ('iter_5.pth', 'iter_7.pth'):
        saved = [torch.load(tmp_path / run / name, map_location='cpu', weights_only=False)
                 ['message_hub']['log_scalars'] for run in ('immediate', 'deferred')]
        assert saved[1].keys() == saved[0].keys()
        assert len(saved[1]['train/loss'].data[0]) == int(name[5])  # flushed before saving
        for key in saved[0].keys() - {'train/time', 'train/data_time'}:
            assert saved[1][key].data[0].tolist() == saved[0][key].data[0].tolist(), key
    assert DeferredScalars.of(got.message_hub) is None  # taken out when training ends
    # the same training: the logged values are the same weights' losses
    for p, q in zip(ref.model.parameters(), got.model.parameters()):
        assert torch.equal(p, q)

    # MMEngine's hook and wrapper read each tensor log variable and the gradient norm in
    # every iteration; the deferred ones read none (the flushes read the host copies)
    assert _reads_hook(ref).per_iteration == [6] * MAX_ITERS  # loss, 4 tensors, grad norm
    assert _reads_hook(got).per_iteration == [0] * MAX_ITERS


def test_the_store_keeps_order_values_and_kinds():
    hub = MessageHub.get_instance('deferred_scalars_test')
    store = DeferredScalars.install(hub)
    assert DeferredScalars.of(hub) is store
    assert hub.state_dict()['runtime_info'] == {}  # not saved with the hub
    values = [dict(a=torch.tensor(1.25), n=torch.tensor(3), h=torch.tensor(0.5).half(),
                   f=2.0),
              dict(a=torch.tensor(-0.75, dtype=torch.float64), n=torch.tensor([4]), f=1)]
    for it in values:
        for key, value in it.items():
            store.add(key, value)
        store.end_iteration()
    store.end_iteration()  # an empty iteration is no iteration
    assert len(store) == 2 and 'a' not in hub.log_scalars
    assert store.flush() == 2 and len(store) == 0
    assert hub.get_scalar('a').data[0].tolist() == [1.25, -0.75]
    assert hub.get_scalar('n').data[0].tolist() == [3, 4]
    assert hub.get_scalar('h').data[0].tolist() == [0.5]
    assert hub.get_scalar('f').data[0].tolist() == [2.0, 1]
    with pytest.raises(ValueError, match='loss_map must be a number or a one-element'):
        store.add('loss_map', torch.zeros(2, 2))
    with pytest.raises(TypeError, match='name must be a number .* got str'):
        store.add('name', 'frame0')
    store.end_iteration()
    assert len(store) == 0  # nothing kept of the refused values


def test_the_wrapper_reads_the_norm_itself_without_a_store():
    from trackocc.engine import HostSyncFreeOptimWrapper
    hub = MessageHub.get_instance('no_store_test')
    model = torch.nn.Linear(2, 1)
    wrapper = HostSyncFreeOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                                       clip_grad=dict(max_norm=1.0))
    wrapper.message_hub = hub
    wrapper.update_params(model(torch.ones(3, 2)).sum())
    assert len(hub.get_scalar('train/grad_norm').data[0]) == 1  # MMEngine's path


@pytest.mark.parametrize('interval', [0, -1, 1.5, True])
def test_bad_intervals_are_refused(interval):
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        HostSyncFreeRuntimeInfoHook(interval=interval)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_an_iteration_of_cuda_scalars_is_kept_without_a_host_wait():
    hub = MessageHub.get_instance('deferred_scalars_cuda')
    store = DeferredScalars.install(hub)
    x = torch.randn(1000, 1000, device='cuda')
    expected = []
    for i in range(3):
        loss = (x @ x).square().mean()
        norm = torch.linalg.vector_norm(x)
        # the first iteration allocates the pinned host buffer
        torch.cuda.set_sync_debug_mode('error' if i else 'default')
        try:
            store.add('loss', loss)
            store.add('norm', norm)
            store.end_iteration()
        finally:
            torch.cuda.set_sync_debug_mode('default')
        expected.append((loss.item(), norm.item()))
    store.flush()
    assert hub.get_scalar('loss').data[0].tolist() == [e[0] for e in expected]
    assert hub.get_scalar('norm').data[0].tolist() == [e[1] for e in expected]


def test_the_train_tools_amp_keeps_the_wrappers_family():
    from repo_files import load_module
    root = Path(__file__).resolve().parents[2]
    tool = load_module(str(root / 'tools' / 'train.py'), '_train_tool_amp')
    tiny = str(root / 'configs' / 'trackocc' / 'trackocc_tiny_synthetic.py')
    cfg = tool.build_config(tool.parse_args([tiny, '--amp']))
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.loss_scale) == (
        'HostSyncFreeAmpOptimWrapper', 'dynamic')
    assert cfg.default_hooks.runtime_info.type == 'HostSyncFreeRuntimeInfoHook'
    cfg = tool.build_config(tool.parse_args(
        [tiny, '--amp', '--cfg-options', 'optim_wrapper.type=OptimWrapper']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
