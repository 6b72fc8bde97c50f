"""trackocc.analysis.ab_variant: extra compiled / CUDA-graphed sub-modules switched on and off
inside one process (benchmark.py --ab-*), the run labels and the A/B summary. On CPU the
wrappers are built but not called (a CUDA graph only replays on CUDA; torch.compile compiles
at its first call)."""
import pytest
import torch
import torch.nn as nn

from trackocc.analysis.ab_variant import ModuleVariant, ab_labels, ab_summary
from trackocc.utils.cuda_graph import CUDAGraphModule, graph_modules


class Toy(nn.Module):

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        self.tracker = nn.Linear(2, 2)
        self.merge = nn.Identity()


def test_variant_swaps_its_modules_in_and_out():
    model = Toy()
    graph_modules(model, ['encoder'])  # what every run graphs (A)
    head, head0, tracker, merge = model.head, model.head[0], model.tracker, model.merge
    variant = ModuleVariant(model, ['head.0', 'tracker'], ['head', 'merge'])
    with variant:
        assert isinstance(model.head, CUDAGraphModule) and model.head.module is head
        assert hasattr(head[0], '_orig_mod') and head[0]._orig_mod is head0  # compiled inside
        assert hasattr(model.tracker, '_orig_mod') and model.tracker._orig_mod is tracker
        assert isinstance(model.merge, CUDAGraphModule)
        on = dict(head=model.head, head0=head[0], tracker=model.tracker, merge=model.merge)
    assert model.head is head and head[0] is head0 and model.tracker is tracker
    assert model.merge is merge and isinstance(model.encoder, CUDAGraphModule)
    with variant:  # the same wrappers come back (their compiled code and graphs kept)
        assert model.head is on['head'] and head[0] is on['head0']
        assert model.tracker is on['tracker'] and model.merge is on['merge']
        with pytest.raises(RuntimeError, match='already on'):
            variant.__enter__()
    assert model.head is head and head[0] is head0 and variant.entries == 2


def test_variant_restores_on_error():
    model = Toy()
    tracker = model.tracker
    with pytest.raises(KeyError):
        with ModuleVariant(model, ['tracker']):
            raise KeyError('boom')
    assert model.tracker is tracker


@pytest.mark.parametrize('compile_names, graph_names, match', [
    (['nope'], [], "no sub-module 'nope'"),
    (['head.7'], [], "no sub-module 'head.7'"),
    ([], ['encoder'], "'encoder' is already a CUDA graph"),
    (['encoder.0'], [], "'encoder.0' lies in 'encoder', which is already a CUDA graph"),
    (['tracker'], [], "'tracker' is already compiled"),
    ([], ['head.0'], 'no dotted path'),
    ([], [], 'no module'),
])
def test_variant_refuses_what_it_cannot_switch(compile_names, graph_names, match):
    model = Toy()
    graph_modules(model, ['encoder'])
    model.tracker = torch.compile(model.tracker)
    before = dict(model.named_children())
    with pytest.raises(ValueError, match=match):
        ModuleVariant(model, compile_names, graph_names)
    assert dict(model.named_children()) == before  # nothing changed


def test_ab_labels():
    assert ab_labels('graph-bf16', 2) == [('graph-bf16', False), ('graph-bf16+ab', True),
                                         ('graph-bf16#2', False), ('graph-bf16+ab#2', True)]
    with pytest.raises(ValueError):
        ab_labels('graph', 0)


def steady(fps, **stages):
    """A run whose all-frame FPS is 10 below its steady FPS (start-up frames) and whose
    sequences start in 1000 / (fps - 20) ms."""
    return dict(fps=fps - 10, steady_state=dict(fps=fps, latency=dict(median_ms=1000 / fps),
                                                stage_ms=stages),
                sequence_starts=dict(frames=2, mean_ms=1000 / (fps - 20)))


def test_ab_summary_means_over_the_rounds():
    modes = {'fp32': steady(30.0, tracking=3.0),
             'graph-bf16': steady(80.0, tracking=2.0, merge=1.0),
             'graph-bf16+ab': steady(100.0, tracking=1.0, merge=0.5),
             'graph-bf16#2': steady(90.0, tracking=2.0, merge=2.0),
             'graph-bf16+ab#2': dict(error='RuntimeError: x'),  # failed: left out
             'graph-bf16#3': dict(steady_state=None)}  # no steady frame: left out
    out = ab_summary(modes, 'graph-bf16', 3)
    assert out['a']['runs'] == ['graph-bf16', 'graph-bf16#2']
    assert out['b']['runs'] == ['graph-bf16+ab']
    assert out['a']['mean_fps'] == pytest.approx(85.0) and out['b']['fps'] == [100.0]
    assert out['a']['stage_ms'] == pytest.approx(dict(tracking=2.0, merge=1.5))
    assert out['fps_ratio_b_over_a'] == pytest.approx(100 / 85)
    assert out['b_minus_a_ms'] == pytest.approx(dict(tracking=-1.0, merge=-1.0))
    assert out['a']['all_fps'] == [70.0, 80.0] and out['b']['mean_all_fps'] == 90.0
    assert out['all_fps_ratio_b_over_a'] == pytest.approx(90 / 75)
    assert out['a']['sequence_start_ms'] == pytest.approx((1000 / 60 + 1000 / 70) / 2)
    assert out['b']['sequence_start_ms'] == pytest.approx(1000 / 80)
    only_a = ab_summary({'graph': steady(50.0, x=1.0)}, 'graph', 1)
    assert only_a['b']['runs'] == [] and 'fps_ratio_b_over_a' not in only_a


def test_variant_switches_stable_outputs_of_graphed_modules():
    model = Toy()
    graph_modules(model, ['encoder', 'head'], stable_outputs=['head'])
    variant = ModuleVariant(model, stable_names=['encoder'])
    for _ in range(2):
        with variant:
            assert model.encoder.stable_output and model.head.stable_output
        assert not model.encoder.stable_output and model.head.stable_output
    for names, match in ((['head'], "'head' must be a CUDA graph of every run without"),
                         (['tracker'], "'tracker' must be a CUDA graph")):
        with pytest.raises(ValueError, match=match):
            ModuleVariant(model, stable_names=names)


class Budgeted(Toy):
    """A Toy with a setting that needs another one, as TrackOcc.fixed_track_rows."""

    def __init__(self):
        super().__init__()
        self.budget, self._fixed = None, False

    @property
    def fixed(self):
        return self._fixed

    @fixed.setter
    def fixed(self, on):
        if on and self.budget is None:
            raise ValueError('fixed needs a budget')
        self._fixed = on


def test_variant_settings_are_set_inside_and_restored():
    model = Budgeted()
    model.budget = 4
    variant = ModuleVariant(model, ['tracker'], settings=dict(fixed=True, budget=8))
    tracker = model.tracker
    with variant:
        assert model.fixed and model.budget == 8 and hasattr(model.tracker, '_orig_mod')
    assert not model.fixed and model.budget == 4 and model.tracker is tracker
    with pytest.raises(ValueError, match=r"has no setting \['nope'\]"):
        ModuleVariant(model, settings=dict(nope=1))
    # a setting the model refuses: nothing stays changed
    model.budget = None
    refused = ModuleVariant(model, ['tracker'], settings=dict(budget=None, fixed=True))
    with pytest.raises(ValueError, match='fixed needs a budget'):
        refused.__enter__()
    assert not model.fixed and model.budget is None and model.tracker is tracker


def test_variant_settings_of_sub_modules_by_dotted_keys():
    """A dotted key sets an attribute of a sub-module, e.g. a graph wrapper's rekey_warmup in
    the B runs only."""
    model = Toy()
    graph_modules(model, ['encoder', 'head'])
    variant = ModuleVariant(model, settings={'encoder.rekey_warmup': 0,
                                             'head.rekey_warmup': 1})
    with variant:
        assert model.encoder.rekey_warmup == 0 and model.head.rekey_warmup == 1
    assert model.encoder.rekey_warmup is None and model.head.rekey_warmup is None
    for key in ('nope.rekey_warmup', 'encoder.nope'):
        with pytest.raises(ValueError, match='has no setting'):
            ModuleVariant(model, settings={key: 0})


def test_a_setting_of_a_graphed_module_is_the_wrapped_modules_and_drops_its_graph():
    """``head.scale`` of a graphed head is the head's own attribute: set on the wrapped
    module, and the graph (captured with the other value) dropped on entering and leaving; a
    wrapper's own attribute (``rekey_warmup``) drops nothing."""
    model = Toy()
    model.head.scale = 1.0
    graph_modules(model, ['encoder', 'head'])
    drops = {name: [] for name in ('encoder', 'head')}
    for name, calls in drops.items():
        getattr(model, name).drop = lambda calls=calls: calls.append(1)
    variant = ModuleVariant(model, settings={'head.scale': 2.0, 'encoder.rekey_warmup': 0,
                                             'encoder.keep_memory': True})
    with variant:
        assert model.head.module.scale == 2.0 and 'scale' not in vars(model.head)
        assert model.encoder.rekey_warmup == 0 and model.encoder.keep_memory
        assert not hasattr(model.encoder.module, 'keep_memory')
        assert drops == dict(encoder=[], head=[1])
    assert model.head.module.scale == 1.0 and model.encoder.rekey_warmup is None
    assert not model.encoder.keep_memory
    assert drops == dict(encoder=[], head=[1, 1])


def test_variant_runs_graphed_modules_eagerly_and_graphs_what_calls_them():
    """ungraph_names: a module graphed in every run (the merge) runs eagerly in B, where a
    module that calls it (the tracks' settling) is graphed instead; A gets its graph back."""
    model = Toy()
    model.track_settle, model.panoptic_merge = nn.Identity(), nn.Identity()
    graph_modules(model, ['panoptic_merge'])
    merge = model.panoptic_merge
    variant = ModuleVariant(model, graph_names=['track_settle'],
                            ungraph_names=['panoptic_merge'])
    for _ in range(2):
        with variant:
            assert model.panoptic_merge is merge.module
            assert isinstance(model.track_settle, CUDAGraphModule)
        assert model.panoptic_merge is merge
        assert not isinstance(model.track_settle, CUDAGraphModule)
    with pytest.raises(ValueError, match="'encoder' to run eagerly must be a CUDA graph"):
        ModuleVariant(model, ungraph_names=['encoder'])
    # graphed together with what it calls: refused when entering, and nothing stays changed
    clash = ModuleVariant(model, graph_names=['track_settle'])
    with pytest.raises(ValueError, match="'track_settle' calls"):
        clash.__enter__()
    assert model.panoptic_merge is merge and not isinstance(model.track_settle, CUDAGraphModule)
