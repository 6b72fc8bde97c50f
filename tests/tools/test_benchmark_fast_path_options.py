"""benchmark.py fast-path options. --graph-compile-modules: sub-modules torch.compile d before
the graph modes capture them (no compile mode with CUDA graphs of its own; on CUDA the tiny
config's graph-bf16 mode with a compiled sub-module inside a graph; the helper itself in
tests/utils/test_compile_modules.py). --tf32-matmul: TF32 float32 matmuls in every mode but
fp32, the setting restored."""
import json
import os.path as osp

import pytest
import torch

from repo_files import load_module

ROOT = osp.join(osp.dirname(__file__), '..', '..')
BENCH = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark.py')
TINY = osp.join(ROOT, 'configs', 'trackocc', 'trackocc_tiny_synthetic.py')


@pytest.fixture(scope='module')
def bench():
    return load_module(BENCH, 'benchmark')


def test_parse_refuses_compile_modes_with_their_own_graphs(bench, capsys):
    args = bench.parse_args([TINY, '--mode', 'graph-bf16', '--graph-compile-modules',
                             'occ_encoder.upsampler'])
    assert args.graph_compile_modules == ['occ_encoder.upsampler']
    assert bench.parse_args([TINY]).graph_compile_modules == []
    with pytest.raises(SystemExit):
        bench.parse_args([TINY, '--mode', 'graph-bf16', '--graph-compile-modules',
                          'occ_encoder.upsampler', '--compile-mode', 'reduce-overhead'])
    assert 'CUDA graphs of its own' in capsys.readouterr().err


def test_tf32_matmul_in_every_mode_but_fp32(bench, tmp_path, monkeypatch):
    seen = {}

    def fake_run_mode(args, cfg, model, device, dtype, mode, *rest):
        seen[mode] = torch.get_float32_matmul_precision()
        return dict(fps=1.0)

    monkeypatch.setattr(bench, 'run_mode', fake_run_mode)
    before = torch.get_float32_matmul_precision()
    assert before == 'highest'  # the float32 default the reference mode runs in
    res = bench.main([TINY, '--device', 'cpu', '--mode', 'fp32', 'bf16', '--tf32-matmul',
                      '--json', str(tmp_path / 'tf32.json')])
    assert seen == dict(fp32='highest', bf16='high')
    assert 'tf32_matmul' not in res['modes']['fp32'] and res['modes']['bf16']['tf32_matmul']
    assert torch.get_float32_matmul_precision() == before
    seen.clear()
    bench.main([TINY, '--device', 'cpu', '--mode', 'bf16'])
    assert seen == dict(bf16='highest')  # off unless asked


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_compiled_sub_module_replays_inside_the_graph(bench, tmp_path):
    out = tmp_path / 'graph_compile.json'
    bench.main([TINY, '--device', 'cuda', '--mode', 'graph-bf16', '--frames', '3',
                '--warmup', '4', '--max-live-tracks', '8', '--graph-modules', 'occ_encoder',
                '--graph-compile-modules', 'occ_encoder.upsampler', '--json', str(out)])
    result = json.loads(out.read_text())
    assert result['graph_compiled_modules'] == ['occ_encoder.upsampler']
    mode = result['modes']['graph-bf16']
    assert 'error' not in mode
    assert mode['cuda_graphs']['occ_encoder']['replays'] >= 3
