"""tools/analysis_tools/learning_check.sh (syntax, the commands it runs for 1 and 2 GPUs and
for side-by-side ablations, via DRY_RUN) and tools/analysis_tools/learning_curve.py (the CSV of
a constructed work dir). ``compare``: tests/tools/test_compare_runs.py."""
import csv
import json
import os
import os.path as osp
import subprocess
import sys
import tarfile
import time

import pytest

from trackocc.evaluation.functional.track_diagnostics import summarize_class

from repo_files import load_module

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'analysis_tools', 'learning_check.sh')
CURVE = osp.join(REPO, 'tools', 'analysis_tools', 'learning_curve.py')


def load_curve_tool():
    return load_module(CURVE, 'learning_curve_tool_t')


TOOL = load_curve_tool()


def check(*args, **env):
    full_env = dict(os.environ, DRY_RUN='1', **env)
    return subprocess.run(['bash', SCRIPT, *args], env=full_env, capture_output=True, text=True,
                          timeout=60)


def test_bash_syntax():
    proc = subprocess.run(['bash', '-n', SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def options_after(line, flag='--cfg-options'):
    words = line.split()
    return words[words.index(flag) + 1:]


def test_train_one_and_two_gpus_same_options():
    one = check('train', '/d', '/w', '100').stdout.splitlines()
    two = check('train', '/d', '/w', '100', GPUS='2').stdout.splitlines()
    # part 1, stop after the mid-run checkpoint, part 2 resumes
    assert one[0] == 'part 1:' and one[2] == 'stopped after iter_50.pth; part 2:', one
    assert 'tools/train.py' in one[1] and '--resume' not in one[1]
    assert 'tools/train.py' in one[3] and '--resume' in one[3]
    assert 'tools/dist_train.sh' in two[1] and ' 2 --work-dir /w' in two[1]
    assert 'PORT=29500' in two[1] and 'PORT=29501' in two[3] and '--resume' in two[3]
    assert options_after(one[1]) == options_after(two[1]) == options_after(two[3])
    opts = options_after(one[1])
    assert 'train_cfg.max_iters=100' in opts and 'default_hooks.checkpoint.interval=50' in opts
    assert 'default_hooks.checkpoint.max_keep_ckpts=-1' in opts
    # checkpoints every 30: stopped after the first one past the middle; no preemption
    every = check('train', '/d', '/w', '100', CKPT_EVERY='30').stdout
    assert 'stopped after iter_60.pth' in every and 'checkpoint.interval=30' in every
    assert 'part 2' not in check('train', '/d', '/w', '100', PREEMPT='0').stdout
    # clips per GPU: the config's own unless BATCH is given
    assert not any(o.startswith('train_dataloader.batch_size=') for o in opts)
    batch = options_after(check('train', '/d', '/w', '100', BATCH='2').stdout.splitlines()[1])
    assert 'train_dataloader.batch_size=2' in batch
    proc = check('train', '/d', '/w', '100', BATCH='0')
    assert proc.returncode == 2 and "BATCH must be a positive integer, got '0'" in proc.stderr


def test_stop_at_and_after_chain_two_stages():
    """STOP_AT: the first N iterations of a longer schedule, no part 2; AFTER: the driver waits."""
    out = check('train', '/d', '/w', '1800', STOP_AT='900', AFTER='/s1/DONE').stdout.splitlines()
    assert out[0] == 'once /s1/DONE exists:' and out[1] == 'part 1:', out
    opts = options_after(out[2])
    assert 'train_cfg.max_iters=1800' in opts and 'param_scheduler.1.T_max=1800' in opts
    assert out[3] == 'stopped after iter_900.pth (STOP_AT): the run ends there' and len(out) == 4
    for bad in ('901', '1800', 'x'):
        proc = check('train', '/d', '/w', '1800', STOP_AT=bad)
        assert proc.returncode == 2 and f"got '{bad}'" in proc.stderr, proc.stderr


FAKE_TRAIN = """#!/usr/bin/env bash
# stands in for python tools/train.py: note when it started, save iter_2.pth, keep running
w=; prev=; for a in "$@"; do [ "$prev" = --work-dir ] && w=$a; prev=$a; done
date +%s.%N > "$w/started"; touch "$w/iter_2.pth"
exec sleep "${FAKE_SLEEP:-0}"
"""


def test_stop_at_and_after_chain_two_stages_for_real(tmp_path):
    """Not a dry run: stage 2 waits for stage 1's DONE; stage 1's training is stopped after its
    STOP_AT checkpoint (not left running its whole 60 s) and not resumed."""
    fake = tmp_path / 'fake_python'
    fake.write_text(FAKE_TRAIN)
    fake.chmod(0o755)
    s1, s2 = tmp_path / 's1', tmp_path / 's2'
    env = dict(os.environ, PYTHON=str(fake), CKPT_EVERY='2')
    env.pop('DRY_RUN', None)
    second = subprocess.run(['bash', SCRIPT, 'train', '/d', str(s2), '4'], capture_output=True,
                            text=True, timeout=60, env=dict(env, PREEMPT='0',
                                                            AFTER=str(s1 / 'DONE')))
    assert second.returncode == 0 and 'once ' in second.stdout, second.stderr
    time.sleep(1.0)
    assert not (s2 / 'started').exists()  # still waiting for stage 1
    first = subprocess.run(['bash', SCRIPT, 'train', '/d', str(s1), '4'], capture_output=True,
                           text=True, timeout=60, env=dict(env, STOP_AT='2', FAKE_SLEEP='60'))
    assert first.returncode == 0 and 'ends after iter_2.pth' in first.stdout, first.stderr
    for _ in range(400):
        if (s2 / 'DONE').exists():
            break
        time.sleep(0.1)
    assert (s1 / 'DONE').exists() and (s2 / 'DONE').exists()
    assert float((s2 / 'started').read_text()) >= (s1 / 'DONE').stat().st_mtime - 1
    log = (s1 / 'part1.log').read_text()
    assert 'stopped after iter_2.pth' in log and 'STOP_AT=2 of a 4-iteration schedule' in log
    assert not (s1 / 'part2.log').exists()
    assert 'exists at' in (s2 / 'driver.log').read_text()


def test_eval_and_curve_commands(tmp_path):
    work = tmp_path / 'w'
    work.mkdir()
    for it in (100, 50):
        (work / f'iter_{it}.pth').write_bytes(b'')
    out = check('eval', '/d', str(work), '100', GPUS='2', STRICT='1').stdout.splitlines()
    preds = f'{work}/eval_iter_100/preds'
    assert 'tools/dist_test.sh' in out[0] and 'iter_100.pth 2 ' in out[0]
    assert f'--format-only --out-dir {preds}' in out[0]
    assert f'--merge-audit {work}/eval_iter_100/merge_audit.json' in out[0]
    assert 'tools/evaluate_predictions.py --gt-root /d/val/pano_voxel04' in out[1]
    assert f'--pred-dir {preds}' in out[1] and '--strict' in out[1]
    assert f'track_diagnostics.py {preds} /d/val/pano_voxel04' in out[2] and '--strict' in out[2]
    assert any('tools/test.py' in line and '--random-init' in line for line in out)
    single = check('eval', '/d', str(work), '100', UNTRAINED='0').stdout
    assert 'tools/test.py' in single and 'dist_test' not in single
    assert '--random-init' not in single and '--strict' not in single
    # a test-time variant of the same checkpoint, beside the first evaluation
    variant = check('eval', '/d', str(work), '100', UNTRAINED='0', EVAL_TAG='birth',
                    TEST_OPTS='model.tracker.birth_needs_output=True').stdout.splitlines()
    assert f'--out-dir {work}/eval_iter_100_birth/preds' in variant[0]
    assert 'model.tracker.birth_needs_output=True' in options_after(variant[0])
    assert f'{work}/trained_per_sequence_birth.csv' in '\n'.join(variant)
    proc = check('eval', '/d', str(work), '100', EVAL_TAG='a b')
    assert proc.returncode == 2 and "EVAL_TAG must be letters" in proc.stderr
    curve = check('curve', '/d', str(work)).stdout
    assert curve.index('iteration 50') < curve.index('iteration 100')
    assert f'{work}/curve/iter_50/preds' in curve and 'learning_curve.py' in curve


def test_fit_sequences_are_scored_from_the_training_root(tmp_path):
    work = tmp_path / 'w'
    work.mkdir()
    (work / 'iter_100.pth').write_bytes(b'')
    out = check('curve', '/d', str(work), FIT_SEQS='3', FRAMES='10').stdout.splitlines()
    fit = [line for line in out if '/curve/iter_100/fit/' in line]
    assert len(fit) == 2, out
    test, score = fit
    opts = options_after(test)
    assert 'test_dataloader.dataset.data_root=/d/train/' in opts
    assert 'test_dataloader.dataset.data_prefix.occ=pano_voxel04/training' in opts
    assert 'test_dataloader.dataset.ann_file=kitti_format/waymo_infos_train_jpg.pkl' in opts
    assert 'test_dataloader.dataset.indices=30' in opts  # 3 sequences of 10 frames
    assert '--gt-root /d/train/pano_voxel04' in score and '--split training' in score
    assert '--missing-pred skip' in score
    assert f'--json {work}/curve/iter_100/fit/occstq.json' in score
    assert not any('/fit/' in line for line in check('curve', '/d', str(work)).stdout.split('\n'))
    evaluated = check('eval', '/d', str(work), '100', FIT_SEQS='2', UNTRAINED='0').stdout
    assert f'{work}/eval_iter_100/fit/preds' in evaluated and 'indices=20' in evaluated
    proc = check('curve', '/d', str(work), FIT_SEQS='two')
    assert proc.returncode != 0 and "FIT_SEQS must be a number of sequences, got 'two'" in \
        proc.stderr


def test_wait_prints_the_checkpoints_evaluated_so_far(tmp_path):
    work = tmp_path / 'w'
    (work / 'curve' / 'iter_100').mkdir(parents=True)
    (work / 'DONE').write_text('')
    (work / 'part1.log').write_text('Iter(train) [100/100] loss: 1.0\n')
    out = subprocess.run(['bash', SCRIPT, 'wait', str(work), '0'], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHON=sys.executable))
    assert out.returncode == 0 and 'training finished' in out.stdout
    assert 'OccSTQ' not in out.stdout  # nothing evaluated yet
    (work / 'curve' / 'iter_100' / 'occstq.json').write_text(
        json.dumps({'OccSTQ': 0.25, 'AQ': 0.125, 'mIoU': 0.5}))
    out = subprocess.run(['bash', SCRIPT, 'wait', str(work), '0'], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, PYTHON=sys.executable))
    assert out.returncode == 0, out.stderr
    assert '    100   25.00   12.50   50.00' in out.stdout and (work / 'curve.csv').exists()


def test_data_seeds():
    default = check('data', '/d').stdout.splitlines()
    assert '--seed 1 ' in default[0] and '/d/train' in default[0]
    assert '--seed 2 ' in default[1] and '/d/val' in default[1]
    other = check('data', '/d', TRAIN_SEED='11', VAL_SEED='977').stdout.splitlines()
    assert '--seed 11 ' in other[0] and '--seed 977 ' in other[1]


def test_bad_arguments(tmp_path):
    proc = check('train', '/d', '/w', '100', GPUS='two')
    assert proc.returncode == 2 and "GPUS must be a positive integer, got 'two'" in proc.stderr
    proc = check('curve', '/d', str(tmp_path))
    assert proc.returncode == 2 and f'no checkpoint iter_N.pth in {tmp_path}' in proc.stderr
    proc = subprocess.run(['bash', SCRIPT, 'eval', '/d', str(tmp_path), '7'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and 'iter_7.pth does not exist' in proc.stderr
    proc = check()
    assert proc.returncode == 2 and 'learning_check.sh curve ROOT WORK' in proc.stdout


def scalars(folder, rows, tail=''):
    path = folder / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows) + tail)


def test_learning_curve_csv(tmp_path, capsys):
    work = tmp_path / 'w'
    # part 1 logs iterations 10-60 and is cut mid-line; part 2 resumes at 50 and logs 60-100
    scalars(work / '20261130_100000', [{'loss': 100.0 - it, 'iter': it, 'step': it}
                                       for it in range(10, 70, 10)], tail='{"loss": 4')
    scalars(work / '20261130_110000', [{'loss': 10.0, 'iter': 60, 'step': 60},
                                       {'occstq/AQ': 0.1, 'step': 60}]
            + [{'loss': 100.0 - it, 'iter': it, 'step': it} for it in range(70, 110, 10)])
    for it, occ in ((50, 0.1), (100, 0.25)):
        folder = work / 'curve' / f'iter_{it}'
        folder.mkdir(parents=True)
        (folder / 'occstq.json').write_text(json.dumps({'OccSTQ': occ, 'AQ': occ / 2,
                                                        'mIoU': 0.5}))
    diag = summarize_class([], [], 0)
    diag.update(gt_tubes=30, pred_tracks=12, id_switches=3, fragmentations=2)
    (work / 'curve' / 'iter_100' / 'diagnostics.json').write_text(
        json.dumps({'overall': diag}))
    assert TOOL.main([str(work)]) == 0
    cap = capsys.readouterr()
    assert 'cut last line left out' in cap.err
    with open(work / 'curve.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['iter'] for r in rows] == ['50', '100']
    assert float(rows[0]['OccSTQ']) == 0.1 and float(rows[1]['AQ']) == 0.125
    assert float(rows[0]['loss']) == 50.0  # logged at 50
    assert float(rows[0]['loss_mean']) == (90 + 80 + 70 + 60 + 50) / 5
    assert float(rows[1]['loss']) == 0.0
    assert float(rows[1]['loss_mean']) == (10 + 30 + 20 + 10 + 0) / 5  # 60 from part 2
    assert rows[0]['id_switches'] == '' and rows[1]['id_switches'] == '3'
    assert rows[1]['coverage_mean'] == ''  # None: no tube in the constructed summary
    assert '    100   25.00   12.50   50.00' in cap.out
    assert rows[0]['fit_OccSTQ'] == '' and 'fit:STQ' not in cap.out
    # the same checkpoints scored on training sequences (FIT_SEQS)
    (work / 'curve' / 'iter_100' / 'fit').mkdir()
    (work / 'curve' / 'iter_100' / 'fit' / 'occstq.json').write_text(
        json.dumps({'OccSTQ': 0.6, 'AQ': 0.5, 'mIoU': 0.75}))
    assert TOOL.main([str(work)]) == 0
    cap = capsys.readouterr()
    with open(work / 'curve.csv') as f:
        rows = list(csv.DictReader(f))
    assert rows[0]['fit_OccSTQ'] == '' and float(rows[1]['fit_AQ']) == 0.5
    assert 'fit:STQ' in cap.out and '-   60.00   50.00   75.00\n' in cap.out


def test_learning_curve_errors(tmp_path, capsys):
    assert TOOL.main([str(tmp_path / 'none')]) == 2
    assert 'work dir not found' in capsys.readouterr().err
    assert TOOL.main([str(tmp_path)]) == 2
    assert 'no evaluated checkpoint' in capsys.readouterr().err
    folder = tmp_path / 'curve' / 'iter_10'
    folder.mkdir(parents=True)
    assert TOOL.main([str(tmp_path)]) == 2
    assert f'{folder}/occstq.json: file not found' in capsys.readouterr().err
    (folder / 'occstq.json').write_text('{"OccSTQ": 0.1')
    assert TOOL.main([str(tmp_path)]) == 2
    assert 'not valid JSON' in capsys.readouterr().err
    (folder / 'occstq.json').write_text('{"OccSTQ": 0.1, "AQ": 0.1, "mIoU": 0.1}')
    scalars(tmp_path / 'run', [{'loss': 1.0, 'iter': 10}], tail='garbage\n{"loss": 2.0}\n')
    assert TOOL.main([str(tmp_path)]) == 2
    assert 'scalars.json:2: not a scalars line' in capsys.readouterr().err


@pytest.mark.parametrize('key', TOOL.DIAG_KEYS)
def test_curve_reads_keys_the_diagnostics_write(key):
    assert key in summarize_class([], [], 0)


def test_watch_evaluates_new_checkpoints_until_the_run_ends(tmp_path):
    work = tmp_path / 'w'
    work.mkdir()
    (work / 'iter_5.pth').write_bytes(b'')
    env = dict(os.environ, DRY_RUN='1', WATCH_EVERY='0.2')
    proc = subprocess.Popen(['bash', SCRIPT, 'watch', str(tmp_path), str(work)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # (on a slow machine the first pass may already see what follows)
        (work / 'iter_10.pth').write_bytes(b'')
        (work / 'DONE').write_text('')
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    passes = [line for line in out.splitlines() if 'new checkpoint(s)' in line]
    assert passes[-1].endswith('iter_10.pth iter_5.pth'), out
    assert out.rstrip().endswith('training ended, all checkpoints evaluated')
    assert f'{work}/iter_10.pth' in out and 'learning_curve.py' in out
    assert check('watch', '/d', str(tmp_path / 'missing')).returncode == 2


BASE = 'configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ'
ABLATION = [f'{BASE}.py', f'{BASE}_no-memory-bank.py', f'{BASE}_sparse-refine.py']


def ablate_runs(out):
    """{run: (its train / watch command lines, the train.py lines)} of ablate's DRY_RUN."""
    runs, name = {}, None
    for line in out.splitlines():
        if ': training on GPU ' in line:
            name = line.split(':')[0]
            runs[name] = ([], [])
        elif name and ('learning_check.sh train' in line or 'learning_check.sh watch' in line):
            runs[name][0].append(line)
        elif name and 'tools/train.py' in line:
            runs[name][1].append(line)
    return runs


def test_ablate_commands(tmp_path):
    out = tmp_path / 'o'
    proc = check('ablate', '/d', str(out), '100', ABLATION[0], ABLATION[1],
                 f'{ABLATION[2]}=1', ABLATE_GPUS='0 1')
    assert proc.returncode == 0, proc.stderr
    runs = ablate_runs(proc.stdout)
    stems = [osp.basename(c)[:-3] for c in ABLATION]
    assert list(runs) == stems
    trains = []
    for stem, config, gpu in zip(stems, ABLATION, ('0', '1', '1')):
        (train, watch), train_py = runs[stem]
        work = f'{out}/{stem}'
        assert train.startswith(f'env CUDA_VISIBLE_DEVICES={gpu} CONFIG={config} GPUS=1 '
                                'PREEMPT=0 bash ') and train.endswith(f' train /d {work} 100 ')
        assert watch.startswith(f'env CUDA_VISIBLE_DEVICES={gpu} CONFIG={config} GPUS=1 bash ')
        assert watch.endswith(f' watch /d {work} ')
        assert len(train_py) == 1  # PREEMPT=0: one part
        words = train_py[0].split()
        assert words[2:5] == [config, '--work-dir', work]
        trains.append(options_after(train_py[0]))
    # the same data, seeds and schedule: the runs differ by their config only
    assert trains[0] == trains[1] == trains[2]
    assert 'randomness.seed=0' in trains[0] and 'train_cfg.max_iters=100' in trains[0]
    assert not out.exists()  # DRY_RUN writes nothing
    # round-robin over the GPUs; evaluations on WATCH_GPU; PREEMPT as set
    proc = check('ablate', '/d', str(out), '100', *ABLATION, ABLATE_GPUS='2 3', WATCH_GPU='5',
                 PREEMPT='1', EXTRA_OPTS='model.x=1')
    runs = ablate_runs(proc.stdout)
    assert [runs[s][0][0].split()[1] for s in stems] == ['CUDA_VISIBLE_DEVICES=2',
                                                          'CUDA_VISIBLE_DEVICES=3',
                                                          'CUDA_VISIBLE_DEVICES=2']
    assert all(runs[s][0][1].split()[1] == 'CUDA_VISIBLE_DEVICES=5' for s in stems)
    assert all(len(runs[s][1]) == 2 and 'model.x=1' in runs[s][1][1] for s in stems)


def test_ablate_run_options(tmp_path):
    """+KEY=VALUE words after a CONFIG are that run's --cfg-options, in training and in its
    evaluations, after the common ones; they name the run."""
    out = tmp_path / 'o'
    proc = check('ablate', '/d', str(out), '100', f'{ABLATION[0]}=0',
                 '+model.track_criterion.mask_pos_balance=0.01', f'{ABLATION[0]}=1',
                 '+model.track_criterion.mask_pos_balance=0.003', '+train_dataloader.batch_size=2',
                 ABLATION[1], ABLATE_GPUS='0', EXTRA_OPTS='model.x=1')
    assert proc.returncode == 0, proc.stderr
    runs = ablate_runs(proc.stdout)
    stem = osp.basename(BASE)
    names = [f'{stem}+mask_pos_balance=0.01', f'{stem}+mask_pos_balance=0.003+batch_size=2',
             f'{stem}_no-memory-bank']
    assert list(runs) == names
    common = options_after(runs[names[2]][1][0])
    for name, own in zip(names, (['model.track_criterion.mask_pos_balance=0.01'],
                                 ['model.track_criterion.mask_pos_balance=0.003',
                                  'train_dataloader.batch_size=2'], [])):
        (train, watch), train_py = runs[name]
        assert f' train /d {out}/{name} 100' in train and f' watch /d {out}/{name}' in watch
        # the common options, then the run's own (the last word wins in mmengine)
        assert options_after(train_py[0]) == common + own
        if own:  # evaluated with the run's own options (EXTRA_OPTS is for training)
            assert 'TEST_OPTS=' + '\\ '.join(own) + ' ' in watch, watch
        else:
            assert 'TEST_OPTS' not in watch and 'EXTRA_OPTS' not in train
    errors = [('+a=1', ABLATION[0]), (ABLATION[0], '+a'), (ABLATION[0], '+a=b c'),
              (ABLATION[0], '+x=1', ABLATION[0], '+x=1')]
    for args, message in zip(errors, ('comes before any CONFIG', 'options are +KEY=VALUE',
                                      'options are +KEY=VALUE', 'two runs named')):
        proc = check('ablate', '/d', str(out), '100', *args, ABLATE_GPUS='0')
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


def test_ablate_gpus_from_nvidia_smi(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    smi = bin_dir / 'nvidia-smi'  # what `nvidia-smi -L` prints on a two-GPU machine with MIG
    smi.write_text('#!/bin/sh\nprintf "GPU 0: NVIDIA H200 (UUID: GPU-a)\\n'
                   '  MIG 1g.18gb Device 0: (UUID: MIG-b)\\nGPU 1: NVIDIA H200 (UUID: GPU-c)\\n"\n')
    smi.chmod(0o755)
    path = f'{bin_dir}:{os.environ["PATH"]}'
    proc = check('ablate', '/d', str(tmp_path / 'o'), '100', *ABLATION, PATH=path)
    gpus = [line.split(' training on GPU ')[1].split(',')[0]
            for line in proc.stdout.splitlines() if ' training on GPU ' in line]
    assert gpus == ['0', '1', '0'], proc.stderr
    smi.write_text('#!/bin/sh\necho "No devices were found"\n')
    proc = check('ablate', '/d', str(tmp_path / 'o'), '100', ABLATION[0], PATH=path)
    assert proc.returncode == 2 and 'no GPU is known' in proc.stderr
    # each run given its GPU: nvidia-smi is not asked
    assert check('ablate', '/d', str(tmp_path / 'o'), '100', f'{ABLATION[0]}=1',
                 PATH=path).returncode == 0


def test_ablate_bad_arguments(tmp_path):
    out = tmp_path / 'o'

    def error(*args, **env):
        proc = check('ablate', '/d', str(out), '100', *args, **dict(dict(ABLATE_GPUS='0'), **env))
        assert proc.returncode == 2, proc.stdout
        return proc.stderr

    assert 'no CONFIG given' in error()
    assert 'config configs/none.py not found' in error(ABLATION[0], 'configs/none.py')
    assert "GPU must be one device index, got 'a'" in error(f'{ABLATION[0]}=a')
    assert f'two runs named {osp.basename(BASE)}' in error(ABLATION[0], f'{ABLATION[0]}=1')
    assert 'GPUS=2 is not for it' in error(ABLATION[0], GPUS='2')
    assert "WATCH_GPU must be one device index, got '0,1'" in error(ABLATION[0], WATCH_GPU='0,1')
    assert "ABLATE_GPUS must be device indices, got 'x'" in error(ABLATION[0], ABLATE_GPUS='x')
    proc = check('ablate', '/d', str(out), 'many', ABLATION[0], ABLATE_GPUS='0')
    assert proc.returncode == 2 and "ITERS must be a positive integer, got 'many'" in proc.stderr
    work = out / osp.basename(BASE)
    work.mkdir(parents=True)
    (work / 'iter_50.pth').write_bytes(b'')
    assert f'{work} already holds checkpoints' in error(ABLATION[0])


def test_ablate_starts_train_and_watch_per_run(tmp_path):
    """Not a dry run: with a python that fails at once, each run's driver ends (WORK/DONE) and
    its watch finds no checkpoint to evaluate; the manifest lists the runs."""
    out = tmp_path / 'o'
    env = dict(os.environ, PYTHON='false', WATCH_EVERY='0.2', ABLATE_GPUS='0 1')
    cmd = ['bash', SCRIPT, 'ablate', str(tmp_path / 'd'), str(out), '10', ABLATION[0],
           ABLATION[2]]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f'no {tmp_path}/d/train and' in proc.stderr
    assert not out.exists()  # nothing started
    for split in ('train', 'val'):
        (tmp_path / 'd' / split).mkdir(parents=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stems = [osp.basename(ABLATION[0])[:-3], osp.basename(ABLATION[2])[:-3]]
    assert (out / 'ablate.tsv').read_text() == (
        'run\tconfig\tgpu\twatch_gpu\titers\toptions\n'
        f'{stems[0]}\t{ABLATION[0]}\t0\t0\t10\t\n{stems[1]}\t{ABLATION[2]}\t1\t1\t10\t\n')
    assert proc.stdout.count('training started in the background on 1 device(s)') == 2
    for stem in stems:
        work = out / stem
        for _ in range(300):  # both end on their own within seconds
            log = work / 'watch.log'
            if (work / 'DONE').exists() and log.exists() and 'training ended' in log.read_text():
                break
            time.sleep(0.1)
        assert (work / 'part1.log').read_text().rstrip().split()[:2] == ['exit', '1']
        assert 'training ended, all checkpoints evaluated' in (work / 'watch.log').read_text()


def test_ablate_from_another_folder(tmp_path):
    """The script calls itself (train, watch, the driver) by its absolute path, also when it
    was started by a relative one from elsewhere."""
    proc = subprocess.run(['bash', osp.relpath(SCRIPT, tmp_path), 'ablate', '/d', '/o', '10',
                           ABLATION[0]], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, DRY_RUN='1', ABLATE_GPUS='0'), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f'bash {SCRIPT} train /d /o/' in proc.stdout and 'tools/train.py' in proc.stdout


def pack(*args, **env):
    return subprocess.run(['bash', SCRIPT, 'pack', *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, **env))


def test_pack_keeps_results_and_leaves_checkpoints(tmp_path):
    run = tmp_path / 'sweep' / 'cfg+mask_pos_balance=0.05'
    (run / 'curve' / 'iter_10' / 'preds').mkdir(parents=True)
    (run / 'curve' / 'iter_10' / 'fit').mkdir()
    for rel in ('curve.csv', 'part1.log', 'DONE', 'curve/iter_10/occstq.json',
                'curve/iter_10/fit/occstq.json', 'iter_10.pth', 'curve/iter_10/preds/0.npz',
                'curve/iter_10/preds/meta.json'):
        (run / rel).write_text(rel)
    (tmp_path / 'sweep' / 'ablate.tsv').write_text('run\n')
    out = tmp_path / 'res.tar.gz'
    proc = pack(str(tmp_path / 'sweep'), str(out))
    assert proc.returncode == 0, proc.stderr
    assert 'packed 6 result files' in proc.stdout
    with tarfile.open(out) as tar:
        names = sorted(tar.getnames())
        assert tar.extractfile('sweep/cfg+mask_pos_balance=0.05/curve.csv').read() == b'curve.csv'
    assert names == sorted(['sweep/ablate.tsv'] + [
        f'sweep/cfg+mask_pos_balance=0.05/{rel}' for rel in (
            'curve.csv', 'part1.log', 'DONE', 'curve/iter_10/occstq.json',
            'curve/iter_10/fit/occstq.json')]), names
    assert not list(tmp_path.glob('res.tar.gz.tmp-*'))
    # names a transport refuses ('+', '='), mapped
    proc = pack(str(run), str(out), SAFE_NAMES='1')
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        assert 'cfg_mask_pos_balance_0.05/curve/iter_10/fit/occstq.json' in tar.getnames()
    # nothing to pack, or no folder: an error naming it, no tarball
    (tmp_path / 'empty').mkdir()
    for src in ('empty', 'missing'):
        proc = pack(str(tmp_path / src), str(tmp_path / 'x.tar.gz'))
        assert proc.returncode == 2 and src in proc.stderr, proc.stderr
        assert not (tmp_path / 'x.tar.gz').exists()
