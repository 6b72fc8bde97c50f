"""SingleWriterLoggerHook: the test epoch's JSON log is written by the main process only, in
MMEngine's format, atomically (2 ranks dumping the same path left a corrupt file)."""
import logging
import os

import pytest
from mmengine.hooks import LoggerHook

from trackocc.engine.hooks import single_writer_logger_hook as module
from trackocc.engine.hooks.single_writer_logger_hook import SingleWriterLoggerHook


class FakeLogProcessor:
    def get_log_after_epoch(self, runner, batch_idx, mode, with_non_scalar=False):
        assert mode == 'test' and with_non_scalar
        return {'occstq/OccSTQ': 0.25, 'occstq/IoU_road': 0.5, 'time': 1.5}, 'Epoch(test) ...'


class FakeRunner:
    def __init__(self, log_dir):
        self.log_dir = str(log_dir)
        self.log_processor = FakeLogProcessor()
        self.test_dataloader = [0] * 3
        self.logger = logging.getLogger('fake_runner')
        self.timestamp = '20261201_000000'


def hook_for(runner, cls):
    hook = cls()
    hook.json_log_path = f'{runner.timestamp}.json'  # what before_run sets
    return hook


@pytest.mark.parametrize('main', [True, False])
def test_only_the_main_process_writes_the_test_json(tmp_path, monkeypatch, main):
    monkeypatch.setattr(module, 'is_main_process', lambda: main)
    ours, ref = tmp_path / 'ours', tmp_path / 'mmengine'
    ours.mkdir()
    ref.mkdir()
    runner = FakeRunner(ours)
    hook_for(runner, SingleWriterLoggerHook).after_test_epoch(runner, {})
    path = ours / f'{runner.timestamp}.json'
    if not main:
        assert os.listdir(ours) == []
        return
    assert os.listdir(ours) == [path.name]  # no temporary file left
    # the same file MMEngine's hook writes (there: on every rank)
    ref_runner = FakeRunner(ref)
    hook_for(ref_runner, LoggerHook).after_test_epoch(ref_runner, {})
    assert path.read_text() == (ref / path.name).read_text()
