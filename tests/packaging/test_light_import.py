"""``import trackocc`` and the data / evaluation tools import no model, op, torch or mmdet3d;
the tools run from a plain checkout without sys.path or import tricks."""
import glob
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HEAVY = ('torch', 'mmengine', 'mmdet3d', 'mmcv', 'numba', 'trackocc.registry', 'trackocc.models',
         'trackocc.ops', 'trackocc._ext')


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def _loaded_after(statement: str, names=HEAVY) -> list:
    proc = _python(f'import sys\n{statement}\n'
                   f'print(sorted(m for m in {names!r} if m in sys.modules))')
    assert proc.returncode == 0, proc.stderr[-3000:]
    return eval(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('statement', [
    'import trackocc',
    'import trackocc.utils, trackocc.datasets, trackocc.evaluation',
    'from trackocc.evaluation import functional',
    'from trackocc.evaluation.functional.oracle_association import OracleAssociation',
    'from trackocc.datasets.synthetic import constants',
])
def test_light_imports_load_nothing_heavy(statement):
    assert _loaded_after(statement) == []


def test_package_attributes_are_imported_on_first_use():
    assert _loaded_after('from trackocc.evaluation import OccSTQMetric',
                         ('trackocc.evaluation.metrics', 'trackocc.registry')) == [
        'trackocc.evaluation.metrics', 'trackocc.registry']
    proc = _python('import trackocc.datasets as d\n'
                   'try:\n    d.NoSuchName\n'
                   'except AttributeError as e:\n    print(e)\n')
    assert "'trackocc.datasets' has no attribute 'NoSuchName'" in proc.stdout


def test_engine_import_registers_the_checkpoint_safe_globals():
    proc = _python('import torch, trackocc.engine\n'
                   'from mmengine.logging import HistoryBuffer\n'
                   'assert HistoryBuffer in torch.serialization.get_safe_globals()\n'
                   'import sys; assert "trackocc.models" not in sys.modules\n')
    assert proc.returncode == 0, proc.stderr[-3000:]


#: tools that load the original TrackOcc from a user-supplied checkout (their purpose)
LOADS_THE_ORIGINAL = ('tools/parity/', 'tools/model_converters/dump_original_',
                      'tools/analysis_tools/benchmark_occstq.py')
TOOLS = sorted(p[len(REPO) + 1:] for p in glob.glob(osp.join(REPO, 'tools', '**', '*.py'),
                                                     recursive=True)
               if not p[len(REPO) + 1:].startswith(LOADS_THE_ORIGINAL))


@pytest.mark.parametrize('tool', TOOLS)
def test_tools_import_without_tricks(tool):
    source = open(osp.join(REPO, tool)).read()
    assert 'sys.path' not in source and 'spec_from_file_location' not in source, tool


@pytest.mark.parametrize('tool', [
    'tools/create_data.py', 'tools/evaluate_predictions.py', 'tools/train.py', 'tools/test.py',
    'tools/visualize_occupancy.py', 'tools/record_rerun.py', 'tools/analysis_tools/benchmark.py',
    'tools/analysis_tools/benchmark_ops.py', 'tools/analysis_tools/get_flops.py',
    'tools/analysis_tools/memory_traffic.py',
    'tools/analysis_tools/track_diagnostics.py', 'tools/analysis_tools/learning_curve.py',
    'tools/analysis_tools/oracle_association.py',
    'tools/model_converters/publish_model.py'])
def test_tools_start(tool):
    proc = subprocess.run([sys.executable, tool, '--help'], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'usage:' in proc.stdout
