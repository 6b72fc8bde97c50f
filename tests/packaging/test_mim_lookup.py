"""`mim train/test trackocc CFG` resolve tools/ and configs/ through mim's own lookup."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toy_runner_parts import toy_config

mim_utils = pytest.importorskip('mim.utils')
HERE = Path(__file__).resolve().parent


def test_mim_finds_the_package_tools_and_configs():
    assert mim_utils.is_installed('trackocc')
    root = Path(mim_utils.get_installed_path('trackocc'))
    assert (root / '__init__.py').is_file()
    for script in ['train.py', 'test.py']:
        assert (root / '.mim' / 'tools' / script).is_file(), script
    found = mim_utils.recursively_find(str(root), 'default_runtime.py', followlinks=True)
    assert len(found) == 1 and found[0].endswith('configs/_base_/default_runtime.py')


def _mim(*args, cwd):
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get('PYTHONPATH', '')]))
    mim = Path(sys.executable).with_name('mim')
    cmd = [str(mim)] if mim.exists() else [sys.executable, '-m', 'mim']
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_mim_train_and_test_run_the_package_scripts(tmp_path):
    from mmengine.config import Config
    work = tmp_path / 'work'
    cfg_path = tmp_path / 'toy_mim_cfg.py'
    Config(toy_config(work, max_iters=2)).dump(str(cfg_path))

    train = _mim('train', 'trackocc', str(cfg_path), '--gpus', '0', '--work-dir', str(work),
                 cwd=tmp_path)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert (work / 'iter_2.pth').is_file()

    test = _mim('test', 'trackocc', str(cfg_path), '--checkpoint', str(work / 'iter_2.pth'),
                '--gpus', '0', '--work-dir', str(work), cwd=tmp_path)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    assert 'mse' in test.stdout + test.stderr
