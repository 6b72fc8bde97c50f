"""The fixed layout, the two README commands, CI entry and the pins
(constraints == Dockerfile == env)."""
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / 'requirements' / 'constraints.txt'
DOCKERFILE = ROOT / 'docker' / 'Dockerfile'


def read_pins(path=CONSTRAINTS):
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            name, version = line.split('==')
            pins[name.strip().lower()] = version.strip()
    return pins


def test_top_level_layout():
    for name in ['trackocc', 'configs', 'tools', 'ops', 'data', 'tests', 'docker']:
        assert (ROOT / name).is_dir(), name
    for name in ['pyproject.toml', 'README.md', '.ci/run', 'docker/Dockerfile', 'docker/README.md',
                 'data/README.md']:
        assert (ROOT / name).is_file(), name


def test_data_dir_tracks_only_its_readme():
    try:
        out = subprocess.run(['git', 'ls-files', 'data'], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    assert set(out) <= {'data/README.md', 'data/.gitignore'}, out


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / 'README.md').read_text()
    assert 'make demo' in readme and 'make test' in readme
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()
    makefile = (ROOT / 'Makefile').read_text()
    assert re.search(r'^demo: setup', makefile, re.M) and re.search(r'^test: setup', makefile, re.M)
    assert 'requirements/constraints.txt' in (ROOT / 'tools' / 'setup_env.sh').read_text()


def test_constraints_pin_the_supported_stack():
    pins = read_pins()
    expected = {'torch': '2.13.0', 'mmengine': '0.10.7', 'mmcv': '2.1.0', 'mmdet': '3.3.0',
                'mmdet3d': '1.4.0', 'spconv-cu118': '2.3.8', 'cumm-cu118': '0.7.11'}
    for name, version in expected.items():
        assert pins[name] == version, name
    assert int(pins['numpy'].split('.')[0]) < 2
    assert int(pins['setuptools'].split('.')[0]) < 70


def test_installed_env_matches_constraints():
    for name, version in read_pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f'{name} pinned in {CONSTRAINTS.name} but not installed')
        assert installed.split('+')[0] == version, f'{name}: {installed} != {version}'


def test_dockerfile_pins_equal_constraints():
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r'^ARG (\w+)=(\S+)', text, re.M))
    pins = read_pins()
    mapping = {'TORCH_VERSION': 'torch', 'NUMPY_VERSION': 'numpy',
               'SETUPTOOLS_VERSION': 'setuptools',
               'MMENGINE_VERSION': 'mmengine', 'MMCV_VERSION': 'mmcv', 'MMDET_VERSION': 'mmdet',
               'MMDET3D_VERSION': 'mmdet3d', 'SPCONV_VERSION': 'spconv-cu118',
               'CUMM_VERSION': 'cumm-cu118'}
    for arg, pkg in mapping.items():
        assert args.get(arg) == pins[pkg], \
            f'Dockerfile ARG {arg}={args.get(arg)} != {pkg}=={pins[pkg]}'
    assert args['PYTHON_VERSION'] == '3.11'
    assert 'requirements/constraints.txt' in text
    assert re.search(r'^FROM .*cuda.*devel', text.replace('${CUDA_BASE}', args['CUDA_BASE']), re.M)
    assert 'tools/train.py' in text
