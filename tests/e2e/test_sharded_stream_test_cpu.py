"""Sequences sharded over 2 processes give the metrics of 1 process (issue 16, item 5).

The tiny config streams 3 validation sequences (an uneven split: 1 + 2 sequences) from one
checkpoint, with ``tools/test.py`` and with ``tools/dist_test.sh ... 2`` (gloo on CPU). OccSTQ,
AQ, mIoU and every per-class number must be equal; ``StreamThroughputHook``'s record shows that
each sequence was streamed by one rank from its first frame, and the per-sequence CSV that
every frame was scored once.
"""
import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CFG = 'configs/trackocc/trackocc_tiny_synthetic.py'
NUM_SEQS, NUM_FRAMES = 3, 3


@pytest.fixture(scope='module')
def stream_setup(tmp_path_factory):
    """3 validation sequences x 3 frames (small images) and the tiny model's seeded initial
    weights as a checkpoint (it predicts tracks, so AQ is not empty)."""
    import torch

    from trackocc.analysis.model_setup import build_model, load_config
    from trackocc.datasets.synthetic import generate_synthetic_dataset
    base = tmp_path_factory.mktemp('sharded-stream')
    root = str(base / 'data')
    generate_synthetic_dataset(root, train_seqs=0, val_seqs=NUM_SEQS,
                               frames_per_seq=NUM_FRAMES, seed=5, image_size=(96, 64),
                               side_height=48, workers=1, progress=False)
    torch.manual_seed(0)
    model = build_model(load_config(str(ROOT / CFG)), None, 'cpu')
    ckpt = str(base / 'tiny.pth')
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), ckpt)
    return root, ckpt


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_test(data_root, ckpt, out, nproc):
    """Stream the test set; returns (metrics of the test's JSON log, CSV rows, hook record)."""
    root = data_root.rstrip('/') + '/'
    args = [CFG, ckpt, '--work-dir', str(out / 'work'), '--csv', str(out / 'seqs.csv'),
            '--cfg-options', f'test_dataloader.dataset.data_root={root}',
            'test_dataloader.num_workers=0',
            f'default_hooks.stream_throughput.out_file={out / "throughput.json"}']
    # one thread per process in both runs: the same float reductions
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    if nproc == 1:
        cmd = [sys.executable, 'tools/test.py'] + args
    else:  # dist_test.sh runs `python`: this interpreter's
        env.update(PATH=os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', ''),
                   PORT=str(free_port()))
        cmd = ['bash', 'tools/dist_test.sh', CFG, ckpt, str(nproc)] + args[2:]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert f'StreamThroughputHook: {NUM_SEQS * NUM_FRAMES} frames streamed by {nproc} rank(s)' \
        in output, output[-4000:]
    logs = sorted((out / 'work').glob('*/*.json'))
    assert len(logs) == 1, logs
    metrics = json.loads(logs[0].read_text())
    with open(out / 'seqs.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    record = json.loads((out / 'throughput.json').read_text())
    return metrics, rows, record


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.slow
def test_two_process_stream_equals_one_process(stream_setup, tmp_path):
    data_root, ckpt = stream_setup
    one = run_test(data_root, ckpt, tmp_path / 'one', nproc=1)
    two = run_test(data_root, ckpt, tmp_path / 'two', nproc=2)

    # same metrics: OccSTQ, AQ, mIoU and per class (IoU_<class>, AQ_<class>)
    keys = sorted(k for k in one[0] if k.startswith('occstq/'))
    assert {'occstq/OccSTQ', 'occstq/AQ', 'occstq/mIoU', 'occstq/IoU_vehicle'} <= set(keys)
    assert keys == sorted(k for k in two[0] if k.startswith('occstq/'))
    differ = {k: (one[0][k], two[0][k]) for k in keys if not same(one[0][k], two[0][k])}
    assert not differ, differ
    # and per sequence; a run that predicts no track at all would prove little
    assert len(one[1]) == NUM_SEQS and sum(int(r['num_pred_tracks']) for r in one[1]) > 0
    assert len(two[1]) == NUM_SEQS
    for row1, row2 in zip(one[1], two[1]):
        assert row1['sequence_id'] == row2['sequence_id']
        assert int(row1['num_frames']) == int(row2['num_frames']) == NUM_FRAMES  # scored once
        for key in ('num_tubes', 'num_pred_tracks'):
            assert row1[key] == row2[key], (key, row1, row2)
        for key in ('OccSTQ', 'AQ', 'mIoU'):
            assert same(float(row1[key]), float(row2[key])), (key, row1, row2)

    # each sequence streamed by exactly one rank, from its first frame, all of its frames
    seq_ids = sorted(int(r['sequence_id']) for r in one[1])
    record = two[2]
    assert record['world_size'] == 2 and record['frames'] == NUM_SEQS * NUM_FRAMES
    owner = {}
    for rank, runs in enumerate(record['streams']):
        for seq_id, first, count in runs:
            assert seq_id not in owner, f'sequence {seq_id} streamed twice: {record["streams"]}'
            owner[seq_id] = rank
            assert (first, count) == (0, NUM_FRAMES), record['streams']
    assert sorted(owner) == seq_ids
    assert sorted(record['frames_per_rank']) == [NUM_FRAMES, 2 * NUM_FRAMES]  # uneven split
    assert one[2]['streams'] == [[[s, 0, NUM_FRAMES] for s in seq_ids]]
    # the throughput numbers are in the test's JSON log too
    for metrics, _, rec in (one, two):
        assert metrics['stream_frames'] == NUM_SEQS * NUM_FRAMES
        assert same(metrics['stream_fps'], rec['fps']) and rec['fps'] > 0
