"""benchmark.py --channels-last on the tiny config on CPU: every inference mode runs inside the
channels-last block (recorded per mode), after a check against the default layout; refused
with --train. Fields only (no timing assertions)."""
import json
import os.path as osp

import pytest

from repo_files import load_module

ROOT = osp.join(osp.dirname(__file__), '..', '..')
TINY = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


@pytest.fixture(scope='module')
def bench():
    return load_module(osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py'),
                       'benchmark_channels_last')


def test_channels_last_in_every_mode_with_autocast_weights_and_folded_bn(bench, tmp_path):
    out = tmp_path / 'cl.json'
    bench.main([TINY, '--frames', '1', '--warmup', '1', '--max-live-tracks', '3', '--device',
                'cpu', '--mode', 'fp32', 'bf16', '--fuse-conv-bn', '--autocast-weights',
                '--channels-last', '--json', str(out)])
    res = json.loads(out.read_text())
    assert res['channels_last'] is True and res['fuse_conv_bn'] > 10
    assert 0 <= res['transform_check_rel_diff'] <= 1e-2  # folded + channels-last, float32
    fp32, bf16 = res['modes']['fp32'], res['modes']['bf16']
    assert 'error' not in fp32 and 'error' not in bf16
    assert fp32['channels_last'] > 40 and bf16['channels_last'] == fp32['channels_last']
    assert bf16['autocast_weights'] > 10 and bf16['fps'] > 0
    assert 'autocast_weights' not in fp32


def test_default_is_off_and_train_is_refused(bench, capsys):
    assert bench.parse_args([TINY]).channels_last is False
    with pytest.raises(SystemExit):
        bench.parse_args([TINY, '--train', '--channels-last'])
    assert '--channels-last is an inference option' in capsys.readouterr().err
