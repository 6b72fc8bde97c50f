"""tools/analysis_tools/benchmark_occstq.py: its generated case is valid input for the
offline evaluator and scores as a plausible imperfect prediction."""
import os.path as osp
import subprocess
import sys

from repo_files import load_module

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load(name, path):
    return load_module(osp.join(REPO, path), name)


def test_generated_case_scores(tmp_path):
    bench = load('benchmark_occstq_tool', 'tools/analysis_tools/benchmark_occstq.py')
    from trackocc.evaluation import functional as core
    gt_root, pred_dir = bench.make_case(str(tmp_path), num_frames=4)
    result, stats = core.evaluate_directories(gt_root, pred_dir)
    assert result['num_frames'] == 4 and len(stats) == 1
    assert 0.3 < result['AQ'] < 1.0 and 0.3 < result['mIoU'] < 1.0
    assert sum(result['num_tubes']) > 10  # vehicles, pedestrians, cyclists; no sign tubes
    assert result['num_tubes'][3] == 0


def test_benchmark_runs_ours_only(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'analysis_tools',
                                                    'benchmark_occstq.py'),
                           '--frames', '1', '2', '--repeat', '1', '--workdir', str(tmp_path),
                           '--reference-dir', ''],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'ours peak RSS 2 vs 1 frames' in proc.stdout
