"""RecordedGraph, the CPU stand-in for a CUDA graph: replays on new static input values, what
the capture writes in place undone, tensors from before the capture held weakly, shapes fixed."""
import pytest
import torch

from trackocc.utils.recorded_graph import RecordedGraph


def test_replay_reads_the_static_inputs_and_rewrites_the_outputs():
    static, weight = torch.randn(3, 4), torch.randn(4, 2)
    graph = RecordedGraph()
    with graph.capture():
        out = (static @ weight).relu()
        view = out[:, :1]
    assert graph.captured and graph.num_ops >= 2
    first = out.clone()
    static.copy_(torch.randn(3, 4))
    graph.replay()
    assert not torch.equal(out, first)  # written where the capture's output lies
    torch.testing.assert_close(out, (static @ weight).relu(), rtol=0, atol=0)
    assert torch.equal(view, (static @ weight).relu()[:, :1])  # a view of it follows
    with pytest.raises(RuntimeError, match='captured already'):
        with graph.capture():
            pass
    with pytest.raises(RuntimeError, match='replay before capture'):
        RecordedGraph().replay()


def test_the_capture_writes_nothing_the_replay_writes_once():
    """A capture on a GPU runs no kernel: an in-place update of a tensor from before it takes
    effect at each replay only."""
    counter = torch.zeros(2)
    graph = RecordedGraph()
    with graph.capture():
        counter.add_(1)
        made = torch.ones(2)
        made.mul_(3)  # allocated in the capture: left as it is
    assert torch.equal(counter, torch.zeros(2)) and torch.equal(made, torch.full((2, ), 3.))
    graph.replay()
    graph.replay()
    assert torch.equal(counter, torch.full((2, ), 2.))


def test_a_tensor_freed_since_the_capture_is_refused_at_the_replay():
    class Holder:
        scale = torch.full((2, ), 2.)

    static = torch.ones(2)
    graph = RecordedGraph()
    with graph.capture():
        out = static * Holder.scale
    graph.replay()
    assert torch.equal(out, torch.full((2, ), 2.))
    Holder.scale = torch.full((2, ), 5.)  # the graph's tensor is freed (a CUDA graph would read
    with pytest.raises(RuntimeError, match='freed since'):  # whatever reuses its memory)
        graph.replay()


def test_a_data_dependent_shape_is_refused_at_the_replay():
    static = torch.tensor([1., 0., 2.])
    graph = RecordedGraph()
    with graph.capture():
        torch.nonzero(static)
    static.copy_(torch.tensor([1., 1., 2.]))
    with pytest.raises(RuntimeError, match='data-dependent shape'):
        graph.replay()


def test_a_tensor_off_the_cpu_is_refused_at_the_capture():
    graph, x = RecordedGraph(), torch.ones(3, device='meta')
    with pytest.raises(RuntimeError, match='CPU tensors only'):
        with graph.capture():
            x * 2
