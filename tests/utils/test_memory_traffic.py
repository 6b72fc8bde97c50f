"""trackocc.analysis.memory_traffic: op kinds, bytes read / written per op, module attribution
and the hooks' removal; exact counts on hand-made ops (element counts, no timing)."""
import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module

from trackocc.analysis.memory_traffic import TrafficRecorder, record_traffic

MIB = 2**20


def _op(rec, kind, name):
    return rec.by_op[(kind, name)]  # calls, read bytes, written bytes


def test_kinds_and_bytes_of_hand_made_ops():
    x = torch.randn(64, 32)
    h = x.to(torch.bfloat16)  # outside: not counted
    row = torch.randn(1, 32)
    with record_traffic() as rec:
        h.float()                       # cast: 2 bytes in, 4 out per element
        x.t()                           # view: nothing
        x.t().contiguous()              # copy (clone) of 64 x 32 floats
        x * row.expand(64, 32)          # broadcast input counted once (its storage)
        torch.relu(x)
        torch.cat([x, x])
        torch.empty_like(x)             # allocation: nothing
        x @ x.t()
    n = 64 * 32
    assert _op(rec, 'cast', '_to_copy') == [1, 2 * n, 4 * n]
    assert _op(rec, 'copy', 'clone') == [1, 4 * n, 4 * n]
    assert _op(rec, 'elementwise', 'mul') == [1, 4 * n + 4 * 32, 4 * n]
    assert _op(rec, 'elementwise', 'relu') == [1, 4 * n, 4 * n]
    assert _op(rec, 'copy', 'cat') == [1, 8 * n, 8 * n]
    assert _op(rec, 'matmul_conv', 'mm') == [1, 8 * n, 4 * 64 * 64]
    assert rec.by_kind['view'][1:] == [0, 0] and rec.by_kind['view'][0] >= 2
    assert rec.by_kind['alloc'] == [1, 0, 0]
    summary = rec.summary()
    assert summary['total']['moved_mib'] == pytest.approx(
        sum(k['moved_mib'] for k in summary['by_kind'].values()))
    assert summary['top_ops'][0]['op'] == 'cat'  # the most bytes moved
    assert summary['by_module'] == {'-': summary['by_module']['-']}  # no model given


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(8, 8)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.inner(x)) * 2  # the mul is the block's own


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.block(x))


@pytest.mark.parametrize('depth', [1, 2])
def test_ops_are_charged_to_the_innermost_named_module(depth):
    net = Net()
    x = torch.randn(16, 8)
    before = (len(nn_module._global_forward_pre_hooks), len(nn_module._global_forward_hooks))
    with torch.no_grad(), record_traffic(net, depth=depth) as rec:
        net(x)
        x + 1  # outside every module
    # the global hooks are gone again
    assert (len(nn_module._global_forward_pre_hooks),
            len(nn_module._global_forward_hooks)) == before
    owners = set(rec.by_module)
    if depth == 1:
        assert owners == {'block', 'head', '-'}
        assert rec.by_module['block']['elementwise'][0] == 2  # relu and mul
    else:
        assert owners == {'block', 'block.inner', 'block.act', 'head', '-'}
        assert rec.by_module['block']['elementwise'][0] == 1  # the mul only
        assert rec.by_module['block.act']['elementwise'][0] == 1
        assert rec.by_module['block.inner']['matmul_conv'][0] == 1
    assert rec.by_module['-']['elementwise'][0] == 1
    summary = rec.summary()
    assert sum(m['total']['moved_mib'] for m in summary['by_module'].values()) == \
        pytest.approx(summary['total']['moved_mib'])


def test_autocast_casts_are_counted_in_the_module_that_runs_them():
    wrapper = nn.Sequential(nn.Linear(32, 32))
    x = torch.randn(8, 32)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16), \
            record_traffic(wrapper, depth=1) as rec:
        wrapper(x)
    # input and weight to bf16 (the bias too, depending on the torch version)
    assert rec.by_module['0']['cast'][0] >= 2 and '-' not in rec.by_module
    assert rec.by_op[('cast', '_to_copy')][1] >= 8 * 32 * 4 + 32 * 32 * 4  # float32 read


def test_bad_depth():
    with pytest.raises(ValueError, match='depth'):
        TrafficRecorder(nn.Linear(2, 2), depth=0)


def test_sites_name_the_module_of_each_op():
    net = Net()
    with torch.no_grad(), record_traffic(net, depth=2) as rec:
        net(torch.randn(4, 8))
    sites = {(s['module'], s['op']) for s in rec.summary(top=50)['top_sites']}
    assert {('block.inner', 'addmm'), ('block.act', 'relu'), ('block', 'mul'),
            ('head', 'addmm')} <= sites


def test_backward_ops_are_charged_to_the_forward_line_that_made_their_node():
    """In a backward pass the stack is the autograd engine's: with anomaly mode on during the
    forward, each op is charged to the trackocc line whose call made the running node."""
    from trackocc.models.layers.frame_grouped_norm import frame_grouped_batch_norm
    bn = nn.BatchNorm2d(3).train()
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    with torch.autograd.set_detect_anomaly(True, check_nan=False):
        y = frame_grouped_batch_norm(bn, x, 2)
    with record_traffic(lines=True) as rec:
        y.sum().backward()
    lines = {line for line, _, _ in rec.by_line}
    assert any(line.startswith('trackocc/models/layers/frame_grouped_norm.py:')
               and line.endswith('(NativeBatchNormBackward0)') for line in lines), lines
    # without anomaly mode the nodes carry no forward line (new leaves: a leaf's
    # AccumulateGrad node is made once and keeps its first traceback)
    y = frame_grouped_batch_norm(nn.BatchNorm2d(3).train(), x.detach().requires_grad_(True), 2)
    with record_traffic(lines=True) as rec:
        y.sum().backward()
    assert all(line.startswith('- (') or line == '-' for line, _, _ in rec.by_line)
