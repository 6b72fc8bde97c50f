"""tools/analysis_tools/learning_check.sh (syntax, the commands it runs for 1 and 2 GPUs, via
DRY_RUN) and tools/analysis_tools/learning_curve.py (the CSV of a constructed work dir)."""
import csv
import json
import os
import os.path as osp
import subprocess
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
    curve = check('curve', '/d', str(work)).stdout
    assert curve.index('iteration 50') < curve.index('iteration 100')
    assert f'{work}/curve/iter_50/preds' in curve and 'learning_curve.py' in curve


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
