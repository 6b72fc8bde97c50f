"""trackocc.utils.compile_modules: sub-modules compiled in place by dotted path (once, siblings
untouched, unknown names skipped or refused before anything is compiled), compiled outputs
equal to eager ones, and the TF32 matmul scope restored even on error."""
import functools

import pytest
import torch
import torch.nn as nn

from trackocc.utils.compile_modules import (TRACK_ROW_MODULES, compile_modules,
                                            compiled_graphs, dynamic_shape_modules,
                                            float32_matmul_precision, has_compiled_modules)


def _net():
    block = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    return nn.ModuleDict(dict(encoder=nn.ModuleDict(dict(block=block, other=nn.Linear(4, 4)))))


def test_dotted_names_are_compiled_in_place_once():
    net = _net()
    block = net['encoder']['block']
    assert compile_modules(net, ['encoder.block']) == ['encoder.block']
    compiled = net['encoder']['block']
    assert compiled._orig_mod is block  # the wrapper holds the same module and parameters
    assert type(net['encoder']['other']) is nn.Linear  # its sibling untouched
    assert compile_modules(net, ['encoder.block']) == ['encoder.block']
    assert net['encoder']['block'] is compiled  # not wrapped twice
    assert set(net.state_dict()) == {f'encoder.block._orig_mod.{k}'
                                     for k in block.state_dict()} | \
        {'encoder.other.weight', 'encoder.other.bias'}


def test_compiled_module_computes_what_the_eager_one_does():
    net = _net()
    x = torch.randn(3, 4)
    eager = net['encoder']['block'](x)
    compile_modules(net, ['encoder.block'])
    torch.testing.assert_close(net['encoder']['block'](x), eager, rtol=1e-5, atol=1e-6)


def test_unknown_name_skipped_or_refused_before_compiling():
    net = _net()
    assert compile_modules(net, ['encoder.missing']) == []
    with pytest.raises(ValueError, match="'encoder.missing'"):
        compile_modules(net, ['encoder.block', 'encoder.missing'], strict=True)
    assert type(net['encoder']['block']) is nn.Sequential  # nothing compiled


def test_float32_matmul_precision_is_restored():
    before = torch.get_float32_matmul_precision()
    with float32_matmul_precision('high'):
        assert torch.get_float32_matmul_precision() == 'high'
    assert torch.get_float32_matmul_precision() == before
    with pytest.raises(RuntimeError), float32_matmul_precision('medium'):
        raise RuntimeError('boom')
    assert torch.get_float32_matmul_precision() == before
    with float32_matmul_precision(None):
        assert torch.get_float32_matmul_precision() == before


def test_compiled_graphs_count_first_calls_and_new_sizes():
    """What the benchmark's steady-state frames exclude: a call that compiles (Dynamo's
    graph count grows on a first call and on new input sizes, not on a repeated call)."""
    torch._dynamo.reset()  # a clean cache: earlier tests may have compiled the same code
    net = _net()
    assert not has_compiled_modules(net)
    net['encoder']['block'] = torch.compile(net['encoder']['block'], backend='eager')
    assert has_compiled_modules(net)
    block, grown = net['encoder']['block'], []
    for rows in (3, 3, 5, 5, 7, 7):
        before = compiled_graphs()
        block(torch.randn(rows, 4))
        grown.append(compiled_graphs() > before)
    # 3: first compile; 5: recompiled with the size dynamic; 7: covered by that graph
    assert grown == [True, False, True, False, False, False]



def eager_backend(monkeypatch):
    """``torch.compile`` on Dynamo's eager backend (no Inductor kernels): compile counts, fast."""
    monkeypatch.setattr(torch, 'compile', functools.partial(torch.compile, backend='eager'))


def test_dynamic_names_compile_once_for_every_size(monkeypatch):
    """A name in ``dynamic`` compiles with dynamic sizes from its first call: no recompile at
    the first new size; a name outside it specialises on its first size."""
    eager_backend(monkeypatch)
    grown = {}
    for dynamic in ((), ('encoder.block', )):
        torch._dynamo.reset()  # Dynamo caches per code object: each case from a clean cache
        net = _net()
        assert compile_modules(net, ['encoder.block'], dynamic=dynamic) == ['encoder.block']
        grown[dynamic] = []
        for rows in (3, 5, 7):
            before = compiled_graphs()
            net['encoder']['block'](torch.randn(rows, 4))
            grown[dynamic].append(compiled_graphs() > before)
    assert grown == {(): [True, True, False], ('encoder.block', ): [True, False, False]}


def test_tracking_modules_are_dynamic_unless_rows_are_fixed():
    model = nn.Module()
    model.memory_bank, model.query_interaction = nn.Linear(2, 2), nn.Linear(2, 2)
    assert dynamic_shape_modules(model) == TRACK_ROW_MODULES
    model.fixed_track_rows = True
    assert dynamic_shape_modules(model) == ()
    assert dynamic_shape_modules(nn.Linear(2, 2)) == ()  # no tracking modules
