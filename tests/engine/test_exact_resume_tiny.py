"""Exact resume of the tiny config on synthetic data: a run resumed from its checkpoint 1 ends
with the weights (torch.equal) of an uninterrupted 2-iteration run, i.e. the ClipSampler's
position, the data worker's image augmentation and clip redraws (numpy) and the model's random
draws (dropout, random track-query drop: torch) continue as they would have. One training
sequence of 3 frames in clips of 2 gives 2 clips per epoch, so the resume is mid-epoch (epoch
boundaries, validation and crashes during the write are covered by the toy runner tests in
test_safe_checkpoint_hook.py). The settings are deterministic (``randomness.deterministic``):
without them, two uninterrupted runs on 2 threads already differ after 3 iterations.

A tiny-config iteration takes seconds on 2 cores (the 200x200x16 grid), hence 3 in all."""
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import trackocc.engine  # noqa: F401  (checkpoint safe globals for resume)

ROOT = Path(__file__).resolve().parents[2]
CFG = ROOT / 'configs/trackocc/trackocc_tiny_synthetic.py'
MAX_ITERS = 2
CRASH_AT = 1


def tiny_cfg(data_root, work_dir, name, num_workers, resume=False):
    cfg = Config.fromfile(str(CFG))
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.dataset.num_frames_per_sample': 2,
        'train_dataloader.num_workers': num_workers,
        'train_dataloader.persistent_workers': num_workers > 0,
        'train_cfg.max_iters': MAX_ITERS,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.logger.interval': 1,
    })
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = name
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.resume = resume
    return cfg


def trained_weights(cfg):
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, {k: v.clone() for k, v in runner.model.state_dict().items()}


@pytest.mark.slow
def test_tiny_config_resumes_exactly(tiny_train_data, tmp_path, restore_torch_flags):
    """The run 'killed' after checkpoint 1 is the uninterrupted run's own iter_1.pth, copied
    alone into a fresh work dir (a checkpoint does not depend on whether its process went on;
    the toy tests crash real runs): auto-resume finds it without last_checkpoint."""
    num_workers = 1  # as the tiny config: the augmentation runs in a data worker
    _, reference = trained_weights(tiny_cfg(tiny_train_data, tmp_path / 'ref', 'tiny-ref',
                                            num_workers))
    work = tmp_path / 'work'
    work.mkdir()
    shutil.copy(tmp_path / 'ref' / f'iter_{CRASH_AT}.pth', work)
    runner, resumed = trained_weights(tiny_cfg(tiny_train_data, work, 'tiny-resume', num_workers,
                                               resume=True))
    log = Path(runner.log_dir, f'{runner.timestamp}.log').read_text()
    assert f'continuing from checkpoint {work / f"iter_{CRASH_AT}.pth"}' in log
    assert runner.iter == MAX_ITERS
    assert reference.keys() == resumed.keys()
    differing = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not differing, differing[:10]
