"""tools/analysis_tools/memory_traffic.py on the tiny config on CPU: one streamed frame counted
per kind / module / op / source line, the JSON written, bf16 adding casts that fp32 lacks."""
import json
import os.path as osp

import pytest

from repo_files import load_module

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TINY = 'configs/trackocc/trackocc_tiny_synthetic.py'


@pytest.fixture(scope='module')
def tool():
    return load_module(osp.join(ROOT, 'tools', 'analysis_tools', 'memory_traffic.py'),
                       'memory_traffic_tool')


def test_counts_one_frame_in_two_precisions(tool, tmp_path, capsys):
    res = {}
    for mode in ('fp32', 'bf16'):
        out = tmp_path / f'{mode}.json'
        res[mode] = tool.main([TINY, '--device', 'cpu', '--mode', mode, '--max-live-tracks',
                               '4', '--lines', '--top', '10', '--json', str(out)])
        assert json.loads(out.read_text()) == json.loads(json.dumps(res[mode]))
    fp32, bf16 = res['fp32'], res['bf16']
    assert fp32['live_tracks'] <= 4 and fp32['mode'] == 'fp32'
    for r in (fp32, bf16):
        assert r['total']['moved_mib'] > 0
        assert r['total']['moved_mib'] == pytest.approx(
            sum(k['moved_mib'] for k in r['by_kind'].values()))
        assert {'img_backbone', 'occ_encoder', 'pts_bbox_head'} <= {
            m.split('.')[0] for m in r['by_module']}
        assert len(r['top_sites']) == 10 and len(r['top_lines']) == 10
        assert all(line['line'] == '-' or line['line'].startswith('trackocc/')
                   for line in r['top_lines'])
    cast = {m: r['by_kind'].get('cast', {}).get('moved_mib', 0.0) for m, r in res.items()}
    assert cast['bf16'] > cast['fp32'] + 1.0
    text = capsys.readouterr().out
    assert '| kind | calls | read MiB | written MiB |' in text and '| source line |' in text


def test_fast_path_transforms_remove_weight_casts_and_batch_norms(tool):
    common = [TINY, '--device', 'cpu', '--mode', 'bf16', '--max-live-tracks', '4']
    plain = tool.main(common)
    fast = tool.main(common + ['--fuse-conv-bn', '--autocast-weights'])
    assert plain['fused_batch_norms'] == 0 and plain['autocast_weights'] == 0
    assert fast['fused_batch_norms'] > 10 and fast['autocast_weights'] > 10
    # each held layer no longer casts its weight (and bias) per call; folded BNs are gone
    assert fast['by_kind']['cast']['calls'] <= plain['by_kind']['cast']['calls'] - \
        fast['autocast_weights']
    assert fast['by_kind']['normalise_reduce']['calls'] < \
        plain['by_kind']['normalise_reduce']['calls']


def test_custom_ops_count_as_one_kernel_a_call(tool):
    """By default each call of bev_pool_v2 or a deformable attention is one ``kernel`` op
    (inputs read, output written once), as on a GPU; ``--reference-ops`` counts the PyTorch
    references' ops and intermediates, which move more."""
    common = [TINY, '--device', 'cpu', '--max-live-tracks', '4']
    kernels, references = tool.main(common), tool.main(common + ['--reference-ops'])
    assert kernels['by_kind']['kernel']['calls'] >= 3 and 'kernel' not in references['by_kind']
    assert kernels['total']['calls'] < references['total']['calls']
    assert kernels['total']['moved_mib'] < references['total']['moved_mib']
    assert kernels['by_kind']['matmul_conv'] == references['by_kind']['matmul_conv']


def test_bad_arguments(tool):
    with pytest.raises(SystemExit, match='--depth'):
        tool.main([TINY, '--device', 'cpu', '--depth', '0'])
