"""trackocc.analysis.module_precision (one sub-module at another precision than the rest) and
tools/analysis_tools/precision_scan.py on the tiny config's random weights over a tiny
synthetic held-out set (CPU)."""
import json

import pytest
import torch
from mmengine.structures import BaseDataElement, InstanceData
from torch import nn

from repo_files import load_module
from tiny_held_out import TINY, make_tiny_held_out
from trackocc.analysis.module_precision import (autocast_entries, cast_to_float32,
                                                module_precision)



class Probe(nn.Module):
    """A linear layer that records, per call, whether autocast is on and its input's dtype."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.seen = []

    def forward(self, x):
        self.seen.append((torch.is_autocast_enabled('cpu'), x.dtype))
        return self.linear(x)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(Probe(), Probe(), Probe())


def test_only_runs_the_module_alone_under_autocast():
    model, x = _model(), torch.randn(4, 8)
    with module_precision(model, ['1'], 'only', 'cpu', torch.bfloat16) as calls:
        out = model(x)
    assert calls == {'1': 1}
    assert [p.seen for p in model] == [[(False, torch.float32)], [(True, torch.float32)],
                                       [(False, torch.float32)]]
    assert out.dtype == torch.float32  # the layer after it got float32 (no dtype error)
    # and its low precision shows: the output is not float32's
    assert not torch.equal(out, _model()(x))
    assert 'forward' not in model[1].__dict__  # restored


def test_except_runs_the_module_in_float32_inside_autocast():
    model, x = _model(), torch.randn(4, 8)
    with module_precision(model, ['1'], 'except', 'cpu', torch.bfloat16), \
            torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    # the middle layer: autocast off, the first layer's bf16 output cast to float32 for it
    assert [p.seen for p in model] == [[(True, torch.float32)], [(False, torch.float32)],
                                       [(True, torch.float32)]]
    assert out.dtype == torch.bfloat16
    with torch.autocast('cpu', dtype=torch.bfloat16):  # without it: bf16 in, bf16 out
        plain = _model()
        plain(x)
    assert plain[1].seen == [(True, torch.bfloat16)] and plain[2].seen == [(True, torch.bfloat16)]


def test_autocast_entries_count_the_calls_that_begin_under_autocast():
    model, x = _model(), torch.randn(4, 8)
    with autocast_entries(model, ['0', '2'], 'cpu') as entries:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            model[0](x)
        model[2](x)  # outside autocast: a float32 module of a low-precision run
    assert entries == {'0': 1, '2': 0}
    assert not model[0]._forward_pre_hooks  # removed


def test_forward_restored_after_an_error_and_bad_input_named():
    model = _model()
    with pytest.raises(RuntimeError, match='boom'):
        with module_precision(model, ['0'], 'only', 'cpu', torch.bfloat16):
            raise RuntimeError('boom')
    assert all('forward' not in p.__dict__ for p in model)
    with pytest.raises(ValueError, match=r"no sub-module '3\.linear'.*children: 0, 1, 2"):
        with module_precision(model, ['3.linear'], 'only', 'cpu', torch.bfloat16):
            pass
    with pytest.raises(ValueError, match='direction'):
        with module_precision(model, ['0'], 'around', 'cpu', torch.bfloat16):
            pass


def test_cast_to_float32_keeps_integers_and_data_element_identity():
    tracks = InstanceData(query=torch.ones(3, 4, dtype=torch.bfloat16),
                          ids=torch.arange(3), flags=torch.ones(3, dtype=torch.bool))
    sample = BaseDataElement(tracks=tracks, name='frame')
    out = cast_to_float32(dict(a=[sample, torch.zeros(2, dtype=torch.float16)],
                               b=(torch.ones(1, dtype=torch.float64), 'name')))
    assert out['a'][0] is sample and sample.tracks is tracks and sample.name == 'frame'
    assert tracks.query.dtype == torch.float32  # a data element inside a data element
    assert tracks.ids.dtype == torch.long and tracks.flags.dtype == torch.bool
    assert out['a'][1].dtype == torch.float32 and out['b'][0].dtype == torch.float32
    assert out['b'][1] == 'name' and isinstance(out['b'], tuple)


@pytest.fixture(scope='module')
def held_out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('precision_scan')
    return (tmp, *make_tiny_held_out(tmp))


def test_precision_scan_tool(held_out, capsys):
    tmp, root, ckpt = held_out
    scan = load_module('tools/analysis_tools/precision_scan.py', 'precision_scan_tool')
    out = tmp / 'scan.json'
    # memory_bank runs in float32 under autocast (autocast_scope='reference'): named, it is
    # scanned anyway, and listed as such
    res = scan.main([TINY, ckpt, '--data-root', root, '--device', 'cpu', '--score',
                     '--modules', 'occ_encoder', 'pts_bbox_head.sem_head', 'memory_bank',
                     '--direction', 'except', '--json', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res, default=float))
    assert res['frames'] == 4 and res['sequences'] == 2 and res['dtype'] == 'bf16'
    variants = res['variants']
    assert list(variants) == ['fp32-again', 'all', 'except:occ_encoder',
                              'except:pts_bbox_head.sem_head', 'except:memory_bank']
    assert res['autocast_calls'] == {'occ_encoder': 4, 'pts_bbox_head.sem_head': 4,
                                     'memory_bank': 0}
    assert res['float32_in_all'] == ['memory_bank']
    # in float32 under autocast already: keeping it in float32 changes nothing
    assert variants['except:memory_bank']['agreement'] == variants['all']['agreement']
    again = variants['fp32-again']  # the same float32 stream on the CPU: the floor is zero
    assert again['agreement']['semantic_diff_voxels'] == [0] * 4
    assert again['agreement']['instance_diff_voxels'] == [0] * 4
    assert again['occstq_diff_points'] == 0 and again['births_equal']
    # bf16 everywhere moves thousands of the ~140 000 occupied voxels of random weights
    assert variants['all']['mean_semantic_diff_voxels'] > 100
    for name, row in variants.items():
        assert len(row['agreement']['semantic_diff_voxels']) == 4
        if ':' in name:  # once a frame (the memory bank from a sequence's second frame)
            module = name.split(':')[1]
            assert row['module_calls'] == {module: 2 if module == 'memory_bank' else 4}
    assert 'variant' in capsys.readouterr().out


def test_precision_scan_names_a_missing_module(held_out):
    _, root, ckpt = held_out
    scan = load_module('tools/analysis_tools/precision_scan.py', 'precision_scan_missing')
    with pytest.raises(SystemExit, match="no sub-module 'occ_decoder'"):
        scan.main([TINY, ckpt, '--data-root', root, '--device', 'cpu', '--modules',
                   'occ_decoder'])
