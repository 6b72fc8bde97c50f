"""MMEngine's ``LoggerHook`` with the test epoch's JSON written once, atomically.

``LoggerHook.after_test_epoch`` dumps the test metrics to ``<log_dir>/<timestamp>.json`` on
every rank, and all ranks share that path (the timestamp is rank 0's). Two processes that open
the same file for writing and write records of different lengths leave a corrupt file: seen in
a 2-process ``tools/dist_test.sh`` run, where the file ended in the tail of the longer record
(``...}}``, not JSON). The records differ only in per-rank timings; the metrics are the
gathered ones. Here only the main process writes it, under a temporary name renamed into
place, so a reader never sees a half or mixed file.
"""
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.fileio import dump
from mmengine.hooks import LoggerHook

from trackocc.registry import HOOKS

from ...utils.output_files import atomic_write_text


@HOOKS.register_module()
class SingleWriterLoggerHook(LoggerHook):
    """``LoggerHook`` (same arguments) whose test-epoch JSON log is written by the main
    process only, atomically. Training and validation logging are MMEngine's (its visualizer
    writes on the main process only already)."""

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
        runner.logger.info(log_str)
        if is_main_process():
            text = dump(self._process_tags(tag), file_format='json')  # as MMEngine formats it
            atomic_write_text(osp.join(runner.log_dir, self.json_log_path), text)
