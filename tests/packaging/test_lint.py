"""The tree is lint-clean: ``ruff check .`` with the settings of pyproject.toml ([tool.ruff])."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ruff():
    exe = shutil.which('ruff') or str(Path(sys.executable).with_name('ruff'))
    if not Path(exe).exists():
        pytest.skip('ruff is not installed (requirements/tests.txt installs it)')
    return exe


def test_tree_is_lint_clean():
    out = subprocess.run([_ruff(), 'check', '--no-cache', '--output-format', 'concise', '.'],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f'ruff check . found problems:\n{out.stdout}{out.stderr}'


def test_lint_catches_an_unused_import(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('import os\n')
    out = subprocess.run([_ruff(), 'check', '--no-cache', '--config',
                          str(ROOT / 'pyproject.toml'), str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and 'F401' in out.stdout
