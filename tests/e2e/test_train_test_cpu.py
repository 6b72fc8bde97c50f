"""End to end on CPU: the tiny config trains for 2 iterations and streams the validation sequences
through tools/train.py and tools/test.py, single process and as a 2-process (gloo) DDP job."""
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CFG = 'configs/trackocc/trackocc_tiny_synthetic.py'


@pytest.fixture(scope='module')
def e2e_data_root(tmp_path_factory):
    """1 train sequence x 4 frames, 2 val sequences x 3 frames, small images."""
    from trackocc.datasets.synthetic import generate_synthetic_dataset
    root = str(tmp_path_factory.mktemp('e2e') / 'synthetic-waymo')
    generate_synthetic_dataset(root, train_seqs=1, val_seqs=2, frames_per_seq=4, seed=3,
                               image_size=(192, 128), side_height=96, workers=1, progress=False)
    return root


def cfg_options(data_root, work_dir):
    root = data_root.rstrip('/') + '/'
    return ['--work-dir', str(work_dir), '--cfg-options',
            f'train_dataloader.dataset.data_root={root}',
            f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}',
            'train_dataloader.dataset.num_frames_per_sample=2',
            'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
            'test_dataloader.num_workers=0',
            'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
            'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run(args, nproc=1):
    env = dict(os.environ, OMP_NUM_THREADS='1' if nproc > 1 else '2', PYTHONUNBUFFERED='1')
    if nproc == 1:
        cmd = [sys.executable] + args
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
               f'--master_port={free_port()}'] + args + ['--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def finite_losses(work_dir):
    scalars = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    assert scalars, f'no scalars.json under {work_dir}'
    rows = [json.loads(line) for line in scalars[-1].read_text().splitlines()]
    losses = [r['loss'] for r in rows if 'loss' in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
    return losses


def occstq_of(output):
    match = re.search(r'occstq/OccSTQ: ([0-9.naN]+)', output)
    assert match, output[-4000:]
    return float(match.group(1))


def test_train_then_stream_test_single_process(e2e_data_root, tmp_path):
    work = tmp_path / 'work'
    run(['tools/train.py', CFG] + cfg_options(e2e_data_root, work))
    finite_losses(work)
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file()
    out = run(['tools/test.py', CFG, str(ckpt)] + cfg_options(e2e_data_root, work))
    assert 'OccSTQ' in out and '2 sequences' in out, out[-4000:]
    assert 0.0 <= occstq_of(out) <= 1.0


def test_two_process_gloo_train_and_test(e2e_data_root, tmp_path):
    work = tmp_path / 'ddp'
    # as the paper config trains: SyncBN through HostSyncFreeDDP (torch's SyncBN and DDP
    # refuse SyncBN on the CPU)
    wrapper = ['model_wrapper_cfg.type=HostSyncFreeDDP',
               'model_wrapper_cfg.find_unused_parameters=True',
               'model_wrapper_cfg.broadcast_buffers=False']
    out = run(['tools/train.py', CFG, '--sync-bn', 'torch']
              + cfg_options(e2e_data_root, work) + wrapper, nproc=2)
    assert 'Distributed training is not used' not in out
    finite_losses(work)
    ckpt = work / 'iter_2.pth'
    assert ckpt.is_file()
    # each rank streams one whole validation sequence; the metric merges both
    out = run(['tools/test.py', CFG, str(ckpt)] + cfg_options(e2e_data_root, work), nproc=2)
    assert '2 sequences' in out, out[-4000:]
    assert 0.0 <= occstq_of(out) <= 1.0


def test_random_init_baseline_and_argument_errors(e2e_data_root, tmp_path):
    """--random-init evaluates the untrained model (the learning check's baseline), here with
    --fast (a fused copy of the model; no CUDA graphs on CPU); a checkpoint together with
    --random-init, or neither, is refused."""
    out = run(['tools/test.py', CFG, '--random-init', '--fast'] +
              cfg_options(e2e_data_root, tmp_path))
    assert '2 sequences' in out, out[-4000:]
    assert 'FastInferenceHook: testing a copy of the model' in out, out[-4000:]
    assert 0.0 <= occstq_of(out) <= 1.0
    for bad in ([CFG], [CFG, 'x.pth', '--random-init']):
        proc = subprocess.run([sys.executable, 'tools/test.py'] + bad, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and 'either a checkpoint or --random-init' in proc.stderr
