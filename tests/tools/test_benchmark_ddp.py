"""``benchmark.py --train --launcher pytorch``: data-parallel training iterations under torchrun
(issue 16 item 3). Two gloo processes on the CPU run the tiny config through
``tools/analysis_tools/dist_benchmark.sh``; rank 0's JSON must have both ranks, the slowest
rank's mean as ``iter_time`` and equal parameters on both ranks after the steps although each
rank trained on its own clip (so the gradients were all-reduced). No timing assertions."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

from trackocc.analysis.data_parallel import join_rank_results

from repo_files import load_module

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOLS = osp.join(ROOT, 'tools', 'analysis_tools')
TINY = 'configs/trackocc/trackocc_tiny_synthetic.py'


@pytest.fixture(scope='module')
def bench():
    return load_module(osp.join(TOOLS, 'benchmark.py'), 'benchmark')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('extra, message', [
    ([], '--launcher times data-parallel training only'),
    (['--train', '--profile', 'p_'], '--profile cannot be used with --launcher'),
    (['--train', '--keep-going'], '--keep-going cannot be used with --launcher'),
    (['--train', '--device', 'cuda:1'], '--device is cuda or cpu'),
])
def test_launcher_refusals(bench, capsys, extra, message):
    with pytest.raises(SystemExit):
        bench.parse_args([TINY, '--launcher', 'pytorch'] + extra)
    assert message in capsys.readouterr().err


def test_launcher_needs_torchrun_env(bench, monkeypatch):
    for key in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='needs the torchrun environment'):
        bench.main([TINY, '--train', '--launcher', 'pytorch', '--device', 'cpu'])


def _rank(rank, mean, median, diff=0.0):
    return dict(iters=2, warmup=0, clip_frames=1, rank=rank, forward_ms=mean / 2 + rank,
                backward_step_ms=mean / 2 - rank, param_max_abs_diff_to_rank0=diff,
                iter_time=dict(mean_ms=mean, median_ms=median, min_ms=1.0, max_ms=9.0))


def test_join_rank_results_takes_the_slowest_rank():
    out = join_rank_results([_rank(0, 5.0, 6.0), _rank(1, 7.0, 4.0, 2e-3)], 'nccl')
    assert out['world_size'] == 2 and out['backend'] == 'nccl'
    assert out['iter_time'] == dict(mean_ms=7.0, median_ms=6.0, slowest_rank=1)
    assert (out['forward_ms'], out['backward_step_ms']) == (4.5, 2.5)  # rank 1's split
    assert out['param_max_abs_diff'] == 2e-3 and [r['rank'] for r in out['ranks']] == [0, 1]
    assert 'wall_ms_per_iter' not in out  # ranks without one (results before 2026-12-05)
    ranks = [dict(_rank(0, 5.0, 6.0), wall_ms_per_iter=5.5),
             dict(_rank(1, 7.0, 4.0), wall_ms_per_iter=5.25)]
    assert join_rank_results(ranks, 'nccl')['wall_ms_per_iter'] == 5.5  # the slower rank's


# static: DDP without find_unused_parameters (no graph walk after each forward), which needs
# every parameter in every iteration's graph: with 1-frame clips the query interaction and
# the memory bank never run, so only the zero-weight anchor (`anchor_track_modules`) puts
# them there (without it DDP stops at the second iteration: test below)
STATIC = ['--cfg-options', 'find_unused_parameters=False', 'model.anchor_track_modules=True']


def _dist_benchmark(out, extra=()):
    # dist_benchmark.sh runs `python`: this interpreter's; one thread per rank on 2 cores
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', PORT=str(free_port()),
               PATH=osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    # clip of 1 frame: the all-reduce is what is tested, not the tracker
    cmd = ['bash', 'tools/analysis_tools/dist_benchmark.sh', TINY, '2', '--train',
           '--device', 'cpu', '--frames', '2', '--warmup', '0', '--clip-frames', '1',
           '--json', str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_static_ddp_without_the_anchor_stops(tmp_path):
    proc = _dist_benchmark(tmp_path / 'ddp.json', STATIC[:2])
    assert proc.returncode != 0
    assert 'did not receive grad' in proc.stderr or 'unused parameters' in proc.stderr, \
        proc.stderr[-4000:]


# the paper config's synchronised batch norms: torch's SyncBatchNorm refuses the CPU, the
# host-sync-free one of HostSyncFreeDDP runs on it
SYNC_BN = ['--cfg-options', 'sync_bn=torch', 'model_wrapper_cfg.type=HostSyncFreeDDP',
           'model_wrapper_cfg.broadcast_buffers=False',
           'model_wrapper_cfg.find_unused_parameters=True']


# 2-frame clips with the feature networks once per clip (a GPU's default; off on the CPU): the
# synchronised batch norms pool each frame over the ranks inside one batch
SYNC_BN_CLIP = ['--clip-frames', '2', *SYNC_BN, 'model.clip_feature_batch=True']


@pytest.mark.slow
@pytest.mark.parametrize('extra', [[], STATIC, SYNC_BN, SYNC_BN_CLIP],
                         ids=['find_unused', 'static_anchored', 'sync_bn', 'sync_bn_clip'])
def test_two_gloo_ranks_train_in_sync(tmp_path, extra):
    out = tmp_path / 'ddp.json'
    proc = _dist_benchmark(out, extra)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert proc.stdout.count('[benchmark] fp32:') == 1, output[-4000:]  # rank 0 only

    result = json.loads(out.read_text())
    assert result['launcher'] == 'pytorch' and result['world_size'] == 2
    assert result['backend'] == 'gloo' and result['kind'] == 'train'
    res = result['modes']['fp32']
    assert res['world_size'] == 2 and res['backend'] == 'gloo' and res['iters'] == 2
    if extra in (SYNC_BN, SYNC_BN_CLIP):  # the tiny config's 48 training-mode batch norms
        assert (res['wrapper'], res['synchronised_batch_norms'],
                res['host_sync_free_batch_norms']) == ('HostSyncFreeDDP', 48, 48)
    else:
        assert (res['wrapper'], res['synchronised_batch_norms']) == \
            ('MMDistributedDataParallel', 0)
    ranks = res['ranks']
    assert [r['rank'] for r in ranks] == [0, 1] and all(r['device'] == 'cpu' for r in ranks)
    means = [r['iter_time']['mean_ms'] for r in ranks]
    assert all(m > 0 for m in means)
    assert res['iter_time']['mean_ms'] == max(means)
    assert means[res['iter_time']['slowest_rank']] == max(means)
    assert res['iter_time']['median_ms'] == max(r['iter_time']['median_ms'] for r in ranks)
    assert res['wall_ms_per_iter'] == max(r['wall_ms_per_iter'] for r in ranks) > 0
    assert res['schedule_hours'] > 0

    # each rank its own clip: different losses, so different local gradients ...
    assert ranks[0]['loss_first'] != ranks[1]['loss_first']
    # ... yet the same parameters after the steps, which moved them: gradients all-reduced
    # (without the all-reduce the ranks' AdamW steps differ by ~lr = 1e-3 per parameter)
    assert ranks[0]['param_checksum_start'] == ranks[1]['param_checksum_start']
    for r in ranks:
        assert r['param_checksum'] != r['param_checksum_start']
        assert r['param_max_abs_diff_to_rank0'] <= 1e-6
    assert res['param_max_abs_diff'] <= 1e-6
    assert abs(ranks[0]['param_checksum'] - ranks[1]['param_checksum']) <= \
        1e-9 * abs(ranks[0]['param_checksum'])
