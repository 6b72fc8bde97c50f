"""SafeCheckpointHook on a toy runner: checkpoints survive a kill during the write, auto-resume
takes the newest complete checkpoint (broken ones are named and skipped), explicit broken files
are refused, and a resumed run ends with the weights of an uninterrupted one although model,
data pipeline and validation all draw random numbers."""
import os
import random
import multiprocessing
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import trackocc.engine  # noqa: F401  (checkpoint safe globals for resume)
from trackocc.registry import DATASETS, HOOKS, METRICS, MODELS
from trackocc.engine.checkpoint_files import (CheckpointFileError, checkpoint_problem,
                                              remove_stale_temp_files)
from trackocc.utils.tool_setup import prepare_resume


@MODELS.register_module(force=True)
class NoisyToyRegressor(BaseModel):
    """A linear model that draws from torch's global RNG in training (dropout and noise)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, inputs, targets=None, mode='tensor'):
        pred = self.linear(self.drop(inputs))
        if mode == 'loss':
            pred = pred + 0.01 * torch.randn_like(pred)
            return dict(loss=((pred - targets) ** 2).mean())
        return pred


@DATASETS.register_module(force=True)
class NoisyToyPairs(Dataset):
    """Pairs whose inputs are 'augmented' with numpy's and Python's global RNGs."""
    metainfo = dict()

    def __init__(self, length=12):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(length, 2, generator=gen)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        jitter = np.random.uniform(-0.1, 0.1, 2) + random.uniform(-0.1, 0.1)
        return dict(inputs=self.x[i] + torch.from_numpy(jitter).float(), targets=self.y[i])


@METRICS.register_module(force=True)
class NoisyToyMSE(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.append(float(torch.stack(list(data_samples)).pow(2).mean()))

    def compute_metrics(self, results):
        return dict(mse=sum(results) / len(results))


class SimulatedCrash(Exception):
    pass


@HOOKS.register_module(force=True)
class CrashAfterCheckpointHook(Hook):
    """Raises after iteration ``at`` once its checkpoint is written (runs after the hook)."""
    priority = 'LOWEST'

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            raise SimulatedCrash(f'crash after iteration {self.at}')


@HOOKS.register_module(force=True)
class RecordFirstIterHook(Hook):
    first = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if not RecordFirstIterHook.first:  # cleared by train()
            RecordFirstIterHook.first.append(runner.iter)


def toy_cfg(work_dir, name, max_iters=6, interval=2, max_keep=-1, resume=False,
            load_from=None, num_workers=0, crash_at=None, val=False, length=12):
    loader = dict(dataset=dict(type='NoisyToyPairs', length=length), batch_size=2,
                  collate_fn=dict(type='default_collate'), num_workers=0)
    hooks = [dict(type='RecordFirstIterHook')]
    if crash_at is not None:
        hooks.append(dict(type='CrashAfterCheckpointHook', at=crash_at))
    cfg = dict(
        default_scope='trackocc',
        custom_imports=dict(imports=['trackocc.engine'], allow_failed_imports=False),
        experiment_name=name,
        model=dict(type='NoisyToyRegressor'),
        work_dir=str(work_dir),
        train_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=True),
                              num_workers=num_workers),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4)],
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', by_epoch=False,
                                           interval=interval, max_keep_ckpts=max_keep),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks,
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        resume=resume,
        load_from=load_from,
    )
    if val:
        cfg.update(val_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)),
                   val_cfg=dict(type='ValLoop'), val_evaluator=dict(type='NoisyToyMSE'))
    return Config(cfg)


def train(cfg):
    RecordFirstIterHook.first.clear()
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def log_text(runner):
    return Path(runner.log_dir, f'{runner.timestamp}.log').read_text()


def weights(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize('num_workers,crash_at,val', [(0, 2, True), (0, 3, False), (1, 3, True)],
                         ids=['main-process-val', 'epoch-boundary', 'workers-val'])
def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, num_workers, crash_at, val):
    """5 items in batches of 2: an epoch is 3 iterations, so crash_at=3 resumes exactly at an
    epoch boundary; with val the uninterrupted run validates after iteration 2 and 4."""
    common = dict(max_iters=5, interval=1, num_workers=num_workers, val=val, length=5)
    reference = weights(train(toy_cfg(tmp_path / 'ref', 'ref', **common)))

    work = tmp_path / 'work'
    with pytest.raises(SimulatedCrash):
        train(toy_cfg(work, 'crashed', crash_at=crash_at, **common))
    assert (work / f'iter_{crash_at}.pth').is_file()
    resumed = train(toy_cfg(work, 'resumed', resume=True, **common))
    assert RecordFirstIterHook.first == [crash_at]
    assert_same_weights(weights(resumed), reference)


def _train_and_die_while_writing_iter_4(work):
    """(In a forked child) the toy run, SIGKILLed half-way through writing iter_4.pth."""
    from trackocc.utils import output_files
    torch.set_num_threads(1)  # as torch's own forked data workers: no inherited thread pool

    def write_half_then_die(handle, data):
        if os.path.basename(handle.name).startswith('.iter_4.pth'):
            handle.write(data[:len(data) // 2])
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        handle.write(data)

    output_files._write_all = write_half_then_die
    train(toy_cfg(work, 'killed'))


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    """SIGKILL half-way through writing iter_4.pth: iter_2.pth and last_checkpoint stay valid,
    auto-resume continues from iteration 2 and ends with the uninterrupted weights."""
    work = tmp_path / 'work'
    child = multiprocessing.get_context('fork').Process(
        target=_train_and_die_while_writing_iter_4, args=(str(work),))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, child.exitcode
    assert not (work / 'iter_4.pth').exists()
    leftovers = [p for p in os.listdir(work) if p.startswith('.iter_4.pth.tmp-')]
    assert len(leftovers) == 1 and (work / leftovers[0]).stat().st_size > 0
    assert checkpoint_problem(str(work / 'iter_2.pth')) is None
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')

    resumed = train(toy_cfg(work, 'after-kill', resume=True))
    assert RecordFirstIterHook.first == [2]
    assert f'removed {work / leftovers[0]}' in log_text(resumed)
    assert not (work / leftovers[0]).exists()
    reference = weights(train(toy_cfg(tmp_path / 'ref', 'ref-kill')))
    assert_same_weights(weights(resumed), reference)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """An error in the middle of writing (disk full, interrupt) removes the temporary file."""
    from trackocc.utils import output_files

    def fail_half_way(handle, data):
        handle.write(data[:len(data) // 2])
        raise OSError(28, 'No space left on device')

    work = tmp_path / 'work'
    train(toy_cfg(work, 'full-0', max_iters=2))
    monkeypatch.setattr(output_files, '_write_all', fail_half_way)
    with pytest.raises(OSError, match='No space left'):
        train(toy_cfg(work, 'full-1', max_iters=4, resume=True))
    assert not [p for p in os.listdir(work) if p.startswith('.')]
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == ['iter_2.pth']
    assert checkpoint_problem(str(work / 'iter_2.pth')) is None
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2.pth')


@pytest.fixture
def two_checkpoints(tmp_path):
    work = tmp_path / 'work'
    train(toy_cfg(work, 'two', max_iters=4))
    assert (work / 'iter_2.pth').is_file() and (work / 'iter_4.pth').is_file()
    return work


def test_auto_resume_skips_an_empty_newest_checkpoint(two_checkpoints):
    work = two_checkpoints
    (work / 'iter_4.pth').write_bytes(b'')
    (work / 'last_checkpoint').unlink()
    runner = train(toy_cfg(work, 'skip-empty', resume=True))
    assert RecordFirstIterHook.first == [2]
    log = log_text(runner)
    assert f'not resuming from checkpoint {work / "iter_4.pth"}: it is empty (0 bytes' in log
    assert f'continuing from checkpoint {work / "iter_2.pth"}' in log


def test_auto_resume_without_last_checkpoint_takes_the_newest(two_checkpoints):
    work = two_checkpoints
    (work / 'last_checkpoint').unlink()
    train(toy_cfg(work, 'no-record', resume=True))
    assert RecordFirstIterHook.first == [4]


@pytest.mark.parametrize('record,message', [
    ('', 'is empty'), ('\x00garbage', "names '\\x00garbage', which is not a file")],
    ids=['empty', 'garbled'])
def test_bad_last_checkpoint_falls_back_to_the_files(two_checkpoints, record, message):
    work = two_checkpoints
    (work / 'last_checkpoint').write_text(record)
    runner = train(toy_cfg(work, f'record-{message[:5]}', resume=True))
    assert RecordFirstIterHook.first == [4]
    assert f'{work / "last_checkpoint"} {message}' in log_text(runner)


def test_a_stale_last_checkpoint_does_not_hide_a_newer_complete_file(two_checkpoints):
    work = two_checkpoints  # e.g. killed between the rename of iter_4 and last_checkpoint
    (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))
    train(toy_cfg(work, 'stale-record', resume=True))
    assert RecordFirstIterHook.first == [4]


@pytest.mark.parametrize('content,message', [
    (b'', r'is empty \(0 bytes'),
    (b'\x89PNG random bytes' * 10, 'is not a complete torch.save archive'),
    (None, 'is not a complete torch.save archive')], ids=['empty', 'random', 'truncated'])
def test_explicit_resume_from_a_broken_file_names_it(two_checkpoints, content, message):
    work = two_checkpoints
    broken = work / 'broken.pth'
    full = (work / 'iter_4.pth').read_bytes()
    broken.write_bytes(full[:len(full) // 2] if content is None else content)
    with pytest.raises(CheckpointFileError, match=rf'checkpoint {broken} {message}'):
        train(toy_cfg(work, f'explicit-{message[:4]}', resume=True, load_from=str(broken)))
    with pytest.raises(FileNotFoundError, match='nope.pth does not exist'):
        train(toy_cfg(work, 'explicit-missing', resume=True, load_from=str(work / 'nope.pth')))


def test_all_checkpoints_broken_is_an_error_not_a_fresh_start(two_checkpoints):
    work = two_checkpoints
    for name in ('iter_2.pth', 'iter_4.pth'):
        (work / name).write_bytes(b'')
    with pytest.raises(CheckpointFileError, match='none of the checkpoints.*iter_4.pth, '
                                                  'iter_2.pth'):
        train(toy_cfg(work, 'all-broken', resume=True))


def test_resume_with_an_empty_work_dir_starts_afresh(tmp_path):
    runner = train(toy_cfg(tmp_path / 'fresh', 'fresh', max_iters=2, resume=True))
    assert RecordFirstIterHook.first == [0]
    assert 'no checkpoint in' in log_text(runner)


def test_max_keep_ckpts_keeps_the_newest(tmp_path):
    work = tmp_path / 'keep'
    train(toy_cfg(work, 'keep', max_iters=6, max_keep=2))
    assert sorted(p for p in os.listdir(work) if p.endswith('.pth')) == ['iter_4.pth',
                                                                          'iter_6.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_6.pth')


def test_prepare_resume_takes_the_seed_of_the_checkpoint(two_checkpoints):
    """tools/train.py --resume without --seed: the runner is built with the checkpoint's seed
    (samplers and data workers are seeded from it before the checkpoint is loaded)."""
    work = two_checkpoints
    cfg = toy_cfg(work, 'seed', resume=True)
    cfg.randomness = dict(seed=None)
    prepare_resume(cfg)
    assert cfg.load_from == str(work / 'iter_4.pth') and cfg.randomness.seed == 0
    cfg = toy_cfg(tmp := work / 'elsewhere', 'seed-none', resume=True)
    prepare_resume(cfg)
    assert cfg.resume is False and not tmp.exists()


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    stale, mine = tmp_path / f'.iter_2.pth.tmp-{dead}', tmp_path / f'.iter_4.pth.tmp-{os.getpid()}'
    stale.write_bytes(b'x')
    mine.write_bytes(b'x')
    assert remove_stale_temp_files(str(tmp_path)) == [str(stale)]
    assert mine.exists()
