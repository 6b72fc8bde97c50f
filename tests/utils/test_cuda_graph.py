"""CUDAGraphModule: eager pass-through where graphs do not apply (CPU, training, autograd) and
replays equal to eager calls, recapture on a new signature, autocast, chained graphs: on a GPU,
and emulated on the CPU (``emulate=True``: RecordedGraph, the same static inputs, outputs and
host code run at the capture only)."""
import functools

import pytest
import torch
import torch.nn as nn

from trackocc.utils.cuda_graph import (CUDAGraphModule, StableOutputs, drop_graphs, graph_modules,
                                      graph_steady, is_static_input, mark_static_input)
from trackocc.utils.rig_inputs import RigInputs

_CUDA = pytest.param('cuda', id='cuda', marks=[
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')])
# the graphs' semantics everywhere, CUDA graphs where there is a GPU
DEVICES = [pytest.param('cpu', id='emulated'), _CUDA]


def wrapper(device):
    """CUDAGraphModule, emulated on the CPU."""
    return functools.partial(CUDAGraphModule, emulate=device == 'cpu')


class CachedConv(nn.Module):
    """Conv + a host-keyed cache of a derived tensor, like the detector's per-rig caches."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.cache = None
        self.builds = 0

    def forward(self, x, scale, key=None):
        if self.cache is None or self.cache[0] != key:
            self.cache = (key, scale * 2)
            self.builds += 1
        return {'y': self.conv(x).relu() * self.cache[1], 'key': key}


def test_cpu_training_and_autograd_run_eagerly():
    torch.manual_seed(0)
    inner = CachedConv().eval()
    wrapped = CUDAGraphModule(inner, warmup=1)
    x, s = torch.randn(1, 3, 8, 8), torch.tensor(0.5)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(wrapped(x, s, key='a')['y'], inner(x, s, key='a')['y'])
    assert wrapped.conv is inner.conv and not wrapped.training  # attributes of the module
    out = wrapped.train()(x, s)['y']
    assert out.requires_grad
    assert wrapped.captures == 0 and wrapped.replays == 0
    with pytest.raises(ValueError, match='warmup'):
        CUDAGraphModule(inner, warmup=0)
    holder = nn.Module()
    holder.a, holder.b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert graph_modules(holder, ['a', 'missing']) == ['a']
    assert isinstance(holder.a, CUDAGraphModule) and not isinstance(holder.b, CUDAGraphModule)
    assert graph_modules(holder, ['a']) == ['a'] and isinstance(holder.a.module, nn.Linear)


@pytest.mark.parametrize('device, amp, keep_memory', [
    pytest.param('cpu', None, False, id='emulated'),
    pytest.param('cuda', None, False, id='cuda', marks=_CUDA.marks),
    pytest.param('cuda', torch.bfloat16, False, id='cuda-bf16', marks=_CUDA.marks),
    pytest.param('cuda', torch.bfloat16, True, id='cuda-bf16-keep-memory', marks=_CUDA.marks)])
def test_replays_equal_eager_and_recapture_on_new_signature(device, amp, keep_memory):
    """``keep_memory``: captured without torch.cuda.graph's synchronisation and cache
    flush, the same replays."""
    torch.manual_seed(0)
    inner = CachedConv().to(device).eval()
    wrapped = wrapper(device)(inner, warmup=2, keep_memory=keep_memory)
    scale = torch.tensor(0.5, device=device)
    ctx = (lambda: torch.autocast('cuda', dtype=amp)) if amp else torch.no_grad
    with torch.no_grad():
        for step, key in enumerate(['a'] * 5 + ['b'] * 4 + ['a'] * 3):
            x = torch.randn(2, 3, 16, 16, device=device)
            with ctx():
                got = wrapped(x, scale, key=key)['y'].clone()
                want = inner(x, scale, key=key)['y']
            assert got.dtype == want.dtype
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f'call {step}')
    # a: 2 eager + capture, b: 2 eager + capture, a again: 2 eager + capture
    assert wrapped.captures == 3 and wrapped.replays == 3 + 2 + 1
    assert inner.builds == 3  # the cache was rebuilt by eager calls before each capture


@pytest.mark.parametrize('device', DEVICES)
def test_chained_graphs_read_upstream_outputs_in_place(device):
    """The second graph reads the first one's output where it lies (no static copy); an
    argument from elsewhere runs a second graph that copies it, never writing into that
    output."""
    torch.manual_seed(0)
    first = nn.Conv2d(3, 8, 3, padding=1).to(device).eval()
    second = nn.Conv2d(8, 4, 1).to(device).eval()
    up, down = wrapper(device)(first, warmup=1), wrapper(device)(second, warmup=1)
    with torch.no_grad():
        for step in range(5):
            x = torch.randn(2, 3, 16, 16, device=device)
            mid = up(x)
            got = down(mid[:, :])  # a view of the upstream output
            torch.testing.assert_close(got, second(first(x)), rtol=0, atol=0,
                                       msg=f'call {step}')
        assert up.aliased_inputs == 0 and down.aliased_inputs == 1
        assert down._captured.inputs[0].data_ptr() == mid.data_ptr()
        captures, eager = down.captures, down.eager_calls
        mid_before = mid.clone()
        other = torch.randn(2, 8, 16, 16, device=device)  # same signature, not a graph output
        for step in range(3):
            torch.testing.assert_close(down(other), second(other), rtol=0, atol=0)
        assert torch.equal(mid, mid_before)  # the upstream output was not written into
        assert down.captures == captures + 1 and down.eager_calls == eager  # no warm-up
        assert down.aliased_inputs == 1  # the first graph still reads the output in place


def test_graph_steady_needs_no_capture_and_no_eager_call():
    def counts(captures, replays, eager):
        return dict(captures=captures, replays=replays, eager_calls=eager)

    before = {'a': counts(1, 4, 2), 'b': counts(1, 4, 2)}
    assert graph_steady(before, {'a': counts(1, 5, 2), 'b': counts(1, 5, 2)})
    # one module ran eagerly (warm-up of a new signature): not steady
    assert not graph_steady(before, {'a': counts(1, 5, 2), 'b': counts(1, 4, 3)})
    # a capture (followed by its first replay) is a start-up call
    assert not graph_steady(before, {'a': counts(2, 5, 2), 'b': counts(1, 5, 2)})
    # a module the call did not use (the tracking at a sequence start) does not count
    assert graph_steady(before, {'a': counts(1, 5, 2), 'b': counts(1, 4, 2)})
    # a module wrapped since the first snapshot counts from zero
    assert not graph_steady({}, {'a': counts(1, 1, 2)})
    assert graph_steady({}, {})  # nothing graphed: every call is steady


def test_drop_graphs_forgets_graph_and_warm_up_but_keeps_counters():
    holder = nn.Module()
    holder.enc, holder.head = CUDAGraphModule(nn.Linear(2, 2)), nn.Linear(2, 2)
    enc = holder.enc
    enc._captured, enc._pending, enc._pending_calls = 'graph', ('key', ), 2
    enc.captures, enc.replays = 1, 5
    drop_graphs(holder)
    assert enc._captured is None and enc._pending is None and enc._pending_calls == 0
    assert (enc.captures, enc.replays) == (1, 5)


def test_stable_outputs_keep_their_buffers_until_the_shapes_change():
    stable = StableOutputs()
    first = stable.write({'y': torch.ones(2, 3), 'key': 'a', 'z': torch.zeros(4)})
    assert first['key'] == 'a' and torch.equal(first['y'], torch.ones(2, 3))
    second = stable.write({'y': torch.full((2, 3), 2.0), 'key': 'b', 'z': torch.ones(4)})
    assert second['y'] is first['y'] and second['z'] is first['z'] and second['key'] == 'b'
    assert torch.equal(first['y'], torch.full((2, 3), 2.0))  # rewritten in place
    assert stable.allocations == 1
    assert stable.storages == {first['y'].untyped_storage().data_ptr(),
                               first['z'].untyped_storage().data_ptr()}
    with pytest.raises(RuntimeError, match='other shapes'):  # inside a capture: no allocation
        stable.write({'y': torch.ones(3, 3), 'key': 'a', 'z': torch.zeros(4)}, allocate=False)
    third = stable.write({'y': torch.ones(3, 3), 'key': 'a', 'z': torch.zeros(4)})
    assert third['y'].shape == (3, 3) and stable.allocations == 2
    strided = torch.ones(4, 3).t()  # the buffers keep the output's strides
    assert stable.write(strided).stride() == strided.stride()


def test_stable_output_switch_drops_the_graph():
    wrapped = CUDAGraphModule(nn.Linear(2, 2))
    assert not wrapped.stable_output
    wrapped._captured, wrapped.captures = 'graph', 1
    wrapped.stable_output = True
    assert wrapped.stable_output and wrapped._captured is None and wrapped.captures == 1
    wrapped._captured = 'graph'
    wrapped.stable_output = True  # unchanged: the graph stays
    assert wrapped._captured == 'graph'
    wrapped.stable_output = False
    assert not wrapped.stable_output and wrapped._captured is None
    holder = nn.Module()
    holder.a, holder.b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert graph_modules(holder, ['a', 'b'], stable_outputs=['b']) == ['a', 'b']
    assert not holder.a.stable_output and holder.b.stable_output
    with pytest.raises(ValueError, match=r"\['c'\] are not among the graphed"):
        graph_modules(holder, ['a'], stable_outputs=['c'])
    x = torch.randn(1, 2)
    with torch.no_grad():  # CPU: eager, the module's own output (no buffers)
        assert torch.equal(holder.b(x), holder.b.module(x))


@pytest.mark.parametrize('device', DEVICES)
def test_stable_upstream_keeps_the_downstream_graph(device):
    """A rig change (new key) makes the upstream warm up and capture again; with stable
    outputs the downstream graph, which reads them in place, is kept and stays exact."""
    torch.manual_seed(0)
    inner = CachedConv().to(device).eval()
    second = nn.Conv2d(4, 2, 1).to(device).eval()
    scale = torch.tensor(0.5, device=device)
    for stable in (False, True):
        up = wrapper(device)(inner, warmup=2, stable_output=stable)
        down = wrapper(device)(second, warmup=2)  # in step with the upstream, as in a frame
        with torch.no_grad():
            for step, key in enumerate(['a'] * 5 + ['b'] * 5 + ['c'] * 4):
                x = torch.randn(2, 3, 16, 16, device=device)
                got = down(up(x, scale, key=key)['y'])
                want = second(inner(x, scale, key=key)['y'])
                torch.testing.assert_close(got, want, rtol=0, atol=0,
                                           msg=f'stable {stable}, call {step}')
        assert up.captures == 3  # one graph per key
        if stable:
            assert down.captures == 1 and down.aliased_inputs == 1
            with torch.no_grad():  # a replay returns the buffers the downstream graph reads
                y = up(x, scale, key='c')['y']
            assert down._captured.inputs[0].data_ptr() == y.data_ptr()
        else:  # the upstream's eager warm-up outputs and new graphs move its output
            assert down.captures == 3


def test_parameters_passed_as_arguments_are_read_in_place():
    """A parameter handed to a wrapped module as an argument (the learned query embedding the
    detector gives the query interaction) is read where it lies, as the module's own weights
    are; other tensors are copied into static inputs unless another graph wrote them."""
    wrapped = CUDAGraphModule(nn.Linear(2, 2))
    embedding = nn.Embedding(3, 2)
    with torch.no_grad():
        assert wrapped._read_in_place(embedding.weight)
        assert not wrapped._read_in_place(embedding.weight.detach().clone())
        assert not wrapped._read_in_place(embedding.weight * 2)  # computed: no grad


@pytest.mark.parametrize('device', DEVICES)
def test_parameter_argument_is_graphed_and_followed(device):
    """A call taking another module's parameter is captured (it used to run eagerly every
    time: a tensor requiring grad made the signature ungraphable) and replays read the
    parameter's current values."""
    torch.manual_seed(0)

    class AddRows(nn.Module):
        def forward(self, x, rows):
            return torch.cat([rows, x]) * 2

    embedding = nn.Embedding(3, 4).to(device)
    wrapped = wrapper(device)(AddRows().eval(), warmup=1)  # a training module runs eagerly
    with torch.no_grad():
        for step in range(4):
            x = torch.randn(2, 4, device=device)
            if step == 3:  # an in-place update the graph reads
                embedding.weight.mul_(-1)
            got = wrapped(x, embedding.weight)
            torch.testing.assert_close(got, torch.cat([embedding.weight, x]) * 2, rtol=0,
                                       atol=0, msg=f'call {step}')
    assert wrapped.captures == 1 and wrapped.replays >= 2 and wrapped.aliased_inputs == 1


@pytest.mark.parametrize('device', DEVICES)
def test_static_inputs_are_read_in_place_and_rewritten_between_replays(device):
    """A tensor marked with ``mark_static_input`` (a camera rig's inputs in
    :class:`RigInputs`) is read where it lies: a new rig written into it in place changes what
    the replays read, without a capture; a new value of another shape is another graph."""

    class Gather(nn.Module):
        def forward(self, x, index):
            return x[index] * 2

    rig = RigInputs()
    wrapped = wrapper(device)(Gather().eval(), warmup=1)
    x = torch.arange(6.0, device=device)
    with torch.no_grad():
        for key, index in ((0, [0, 1]), (0, [0, 1]), (1, [5, 4]), (2, [3, 3]), (1, [5, 4])):
            held = rig.get(key)
            if held is None:
                held = rig.store(key, torch.tensor(index, device=device))
            assert is_static_input(held)
            got = wrapped(x, held)
            assert torch.equal(got, x[torch.tensor(index, device=device)] * 2), (key, index)
        assert wrapped.captures == 1 and wrapped.aliased_inputs == 1 and rig.allocations == 1
        wrapped(x, rig.store(3, torch.tensor([1, 2, 3], device=device)))  # longer: new buffers
        assert rig.allocations == 2 and wrapped.captures == 1  # warm-up call of a signature
        got = wrapped(x, rig.get(3))
        assert torch.equal(got, x[1:4] * 2) and wrapped.captures == 2


def test_capture_warm_up_copies_keep_the_strides_of_inputs_read_in_place():
    """The eager run before a capture works on copies of the inputs read in place; a copy
    with other strides than the input (``clone()`` of a slice is contiguous) made a compiled
    module compile again inside the capture (its guards check strides), where inductor's
    autotuning synchronised and invalidated the capture (H200, 2026-12-04)."""
    seen = []

    class Gather(nn.Module):
        def forward(self, x, index):
            seen.append(index.stride())
            return x[index] * 2

    wrapped = CUDAGraphModule(Gather().eval(), warmup=1, emulate=True)
    rows = mark_static_input(torch.tensor([[0, 1, 2, 3], [4, 5, 0, 1]])[:, :2])
    x = torch.arange(6.0)
    with torch.no_grad():
        for _ in range(3):  # eager, captured (an eager run, then the capture), replayed
            assert torch.equal(wrapped(x, rows), x[rows] * 2)
    assert wrapped.captures == 1 and wrapped.replays == 2 and wrapped.aliased_inputs == 1
    assert seen == [(4, 1)] * 3


def test_rekey_warmup_counts_only_after_a_first_capture():
    """The first signature gets ``warmup`` eager calls, later ones ``rekey_warmup`` (None:
    ``warmup`` again); a bad value is refused."""
    wrapped = CUDAGraphModule(nn.Identity(), warmup=2, rekey_warmup=0)
    assert wrapped._warmup_calls() == 2
    wrapped.captures = 1  # as after a capture
    assert wrapped._warmup_calls() == 0
    wrapped.rekey_warmup = None
    assert wrapped._warmup_calls() == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='rekey_warmup must be None or an int >= 0'):
            wrapped.rekey_warmup = bad
    model = nn.Module()
    model.a = nn.Identity()
    graph_modules(model, ['a'], rekey_warmup=1)
    assert model.a.rekey_warmup == 1


@pytest.mark.parametrize('device', DEVICES)
def test_rekey_without_warmup_captures_at_the_first_call_of_a_rig(device):
    """rekey_warmup=0: after the first rig, a new key is captured at its first call (the
    capture's eager run rebuilds the key's cache) and the replays stay exact."""
    torch.manual_seed(0)
    inner = CachedConv().to(device).eval()
    scale = torch.tensor(0.5, device=device)
    wrapped = wrapper(device)(inner, warmup=2, rekey_warmup=0)
    with torch.no_grad():
        for step, key in enumerate(['a'] * 4 + ['b'] * 3 + ['c'] * 3):
            x = torch.randn(2, 3, 16, 16, device=device)
            got = wrapped(x, scale, key=key)['y']
            want = inner(x, scale, key=key)['y']
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f'call {step}')
    assert wrapped.captures == 3 and wrapped.eager_calls == 2  # the first key's warm-up only
    assert wrapped.replays == 10 - 2


@pytest.mark.parametrize('device', DEVICES)
def test_fresh_input_runs_a_second_graph_that_copies(device):
    """A downstream graph reads its upstream's output in place; a call with a fresh tensor
    instead (a sequence start) captures, once, a second graph of the signature that copies its
    inputs, and later calls of either kind replay their graph, exactly."""
    torch.manual_seed(0)
    first = nn.Conv2d(3, 4, 3, padding=1).to(device).eval()
    second = nn.Conv2d(4, 2, 1).to(device).eval()
    up, down = wrapper(device)(first, warmup=1), wrapper(device)(second, warmup=1)
    with torch.no_grad():
        for step in range(12):
            x = torch.randn(1, 3, 8, 8, device=device)
            fresh = step in (5, 8, 9)  # not the upstream's output
            mid = torch.randn(1, 4, 8, 8, device=device) if fresh else up(x)
            torch.testing.assert_close(down(mid), second(mid), rtol=0, atol=0,
                                       msg=f'call {step}')
            if step == 4:
                assert down.captures == 1 and down.aliased_inputs == 1
        assert down.captures == 2 and down.eager_calls == 1  # in place, then the copying one
        assert down._captured.inputs[0].data_ptr() == up(x).data_ptr()  # still in place


def test_a_graph_and_the_graphs_it_calls_are_refused_together():
    """``track_carry`` runs the memory bank and the query interaction inside it: either it
    or they are graphed, in one call of graph_modules or across calls."""
    model = nn.Module()
    model.memory_bank, model.query_interaction = nn.Identity(), nn.Identity()
    model.track_carry = nn.Identity()
    with pytest.raises(ValueError, match=r"'track_carry' calls \['memory_bank'\]"):
        graph_modules(model, ['track_carry', 'memory_bank'])
    assert not isinstance(model.track_carry, CUDAGraphModule)  # nothing wrapped
    graph_modules(model, ['query_interaction'])
    with pytest.raises(ValueError, match=r"calls \['query_interaction'\]"):
        graph_modules(model, ['track_carry'])
    other = nn.Module()
    other.memory_bank, other.track_carry = nn.Identity(), nn.Identity()
    assert graph_modules(other, ['track_carry']) == ['track_carry']


def test_data_elements_are_walked_into_and_rebuilt():
    """TrackInstances (an mmengine data element) in arguments / outputs: its fields are leaves
    of the flattened tree (graph inputs / outputs), the other leaves hashable (the
    signature), and from_tree builds new elements with the same tensors."""
    from torch.utils._pytree import tree_flatten
    from trackocc.models.trackers import build_empty_tracks
    from trackocc.utils.cuda_graph import from_tree, to_tree
    tracks = build_empty_tracks(torch.randn(4, 8), torch.randn(4, 3), 5, 3, 2)
    args = ((tracks, torch.ones(2)), {'index': torch.arange(3), 'flag': True})
    leaves, spec = tree_flatten(to_tree(args))
    tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
    assert len(tensors) == len(tracks.keys()) + 2
    assert all(any(t is v for t in tensors) for v in tracks.values())
    hash(tuple(x for x in leaves if not isinstance(x, torch.Tensor)))
    (back, ones), kwargs = from_tree(to_tree(args))
    assert type(back) is type(tracks) and back is not tracks and kwargs['flag'] is True
    assert set(back.keys()) == set(tracks.keys()) and ones is args[0][1]
    assert all(back.get(k) is tracks.get(k) for k in tracks.keys())
    back.query = torch.zeros(4, 8)  # setting a field of the new element leaves the old one
    assert not torch.equal(tracks.query, back.query)
    stable = StableOutputs()
    first = stable.write(tracks)  # a data element output in buffers too
    assert type(first) is type(tracks) and torch.equal(first.query, tracks.query)
    assert first.query is not tracks.query
    assert stable.write(tracks).query is first.query


@pytest.mark.parametrize('device', DEVICES)
def test_an_input_updated_in_place_is_updated_once_by_the_capturing_call(device):
    """A module that updates an input in place (the memory bank's save countdown) and reads it
    where another graph wrote it: the call that captures updates it once, as every replay and
    every eager call does (the eager run before the capture works on a copy)."""
    torch.manual_seed(0)

    class Countdown(nn.Module):
        def forward(self, period):
            period.sub_(1)
            return period * 2

    first = nn.Linear(4, 4).to(device).eval()
    up = wrapper(device)(first, warmup=1)
    down = wrapper(device)(Countdown().eval(), warmup=1)
    with torch.no_grad():
        for step in range(4):
            x = torch.randn(2, 4, device=device)
            period = up(x)
            got = down(period)
            want = first(x) - 1
            torch.testing.assert_close(period, want, rtol=0, atol=0, msg=f'call {step}')
            torch.testing.assert_close(got, want * 2, rtol=0, atol=0, msg=f'call {step}')
    assert down.captures == 1 and down.aliased_inputs == 1 and down.replays == 3


@pytest.mark.parametrize('device', DEVICES)
def test_verify_records_the_replays_that_differ_from_the_module(device):
    """``verify`` runs the module eagerly beside each replay: a host value the module changes
    every call is frozen in the graph at the capture, so every replay differs."""

    class Counts(nn.Module):
        calls = 0

        def forward(self, x):
            self.calls += 1
            return x + self.calls

    wrapped = wrapper(device)(Counts().eval(), warmup=1)
    wrapped.verify = True
    with torch.no_grad():
        for _ in range(4):
            wrapped(torch.zeros(2, device=device))
    # the capture ran the module twice (eager run, capture): 3 frozen; the checks ran 4, 5, 6
    assert wrapped.mismatches == [(1, 'output', 1.0), (2, 'output', 2.0), (3, 'output', 3.0)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('keep_memory', [False, True])
def test_captures_while_another_thread_pins_host_memory(keep_memory):
    """The DataLoader's pin-memory thread allocates pinned host memory while the test loop
    captures (a new camera rig): in CUDA's default global capture mode that call breaks the
    capture and the thread (twelfth session, pin2); captures are thread-local now."""
    import threading
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(8)]).cuda().eval()
    wrapped = CUDAGraphModule(net, warmup=1, keep_memory=keep_memory)
    stop, errors, pinned = threading.Event(), [], []

    def pin_forever():
        size = 1 << 16
        try:
            while not stop.is_set():  # new sizes: new pinned allocations, not cached blocks
                pinned.append(torch.empty(size, dtype=torch.uint8, pin_memory=True))
                size += 4096
                if len(pinned) > 64:
                    pinned.clear()
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            errors.append(exc)

    thread = threading.Thread(target=pin_forever, daemon=True)
    thread.start()
    try:
        with torch.no_grad():
            for size in (16, 20, 24, 28, 32):  # a new signature each: a capture each
                x = torch.randn(2, 8, size, size, device='cuda')
                for _ in range(3):
                    torch.testing.assert_close(wrapped(x), net(x))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert wrapped.captures == 5 and wrapped.replays >= 5
