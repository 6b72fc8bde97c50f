"""trackocc.analysis on CPU: device clock, repeated-call timing, latency statistics, the stage
timer (module hooks + the detector's stage callbacks), modes, CUDA-graph counters, the
inference / training profiles and the synchronisation-site collector."""
import types
import warnings
from collections import OrderedDict

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn
from torch.utils.hooks import RemovableHandle

from trackocc.analysis.memory import peak_memory_stats
from trackocc.analysis.precision import autocast
from trackocc.analysis.stages import StageTimer, stage_modules
from trackocc.analysis.timing import (DeviceClock, graph_replay_ms, latency_summary,
                                      median_ms)
from trackocc.utils.cuda_graph import CUDAGraphModule, graph_counts


class TickClock(DeviceClock):
    """A clock that advances one millisecond per mark (deterministic timings)."""

    def __init__(self):
        super().__init__('cpu')
        self.now = 0.0

    def mark(self):
        self.now += 1e-3
        return self.now


class ToyDetector(nn.Module):
    """Two stage modules and one callback stage, like TrackOcc's predict."""
    CALLBACK_STAGES = ('panoptic_merge',)

    def __init__(self):
        super().__init__()
        self.img_backbone = nn.Linear(2, 2)
        self.img_neck = nn.Identity()
        self.refiner = None
        self.callbacks = OrderedDict()  # RemovableHandle keeps a weak reference

    def register_stage_callback(self, callback):
        handle = RemovableHandle(self.callbacks)
        self.callbacks[handle.id] = callback
        return handle

    def predict(self, x):
        x = self.img_neck(self.img_backbone(x))
        for cb in list(self.callbacks.values()):
            cb('panoptic_merge', 'start')
        for cb in list(self.callbacks.values()):
            cb('panoptic_merge', 'end')
        return x


def test_stage_timer_sums_module_and_callback_stages_and_removes_its_hooks():
    model = ToyDetector()
    assert [a for a, _ in stage_modules(model)['image_backbone_neck']] == ['img_backbone',
                                                                           'img_neck']
    assert 'refiner' not in stage_modules(model)
    timer = StageTimer(model, TickClock())
    assert set(timer.marks) == {'image_backbone_neck', 'panoptic_merge'}
    model.predict(torch.zeros(1, 2))
    # each call spans one tick: backbone [1, 2], neck [3, 4], merge [5, 6] -> 1 ms each
    assert timer.collect() == pytest.approx({'image_backbone_neck': 2.0, 'panoptic_merge': 1.0})
    timer.reset()
    assert timer.collect() == {'image_backbone_neck': 0.0, 'panoptic_merge': 0.0}
    timer.remove()
    assert not model.callbacks and not model.img_backbone._forward_hooks
    assert not model.img_backbone._forward_pre_hooks


def test_stage_calls_nested_in_the_same_stage_count_once():
    """The memory bank called inside the track carry (both 'tracking'): only the outer call
    is timed."""

    class Outer(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self._inner = (inner, )

        def forward(self, x):
            return self._inner[0](x) + self._inner[0](x)

    model = nn.Module()
    model.memory_bank = nn.Identity()
    model.track_carry = Outer(model.memory_bank)
    timer = StageTimer(model, TickClock())
    model.track_carry(torch.zeros(1))
    model.memory_bank(torch.zeros(1))
    # the inner calls take no mark: the carry [1, 2] -> 1 ms, the memory bank alone [3, 4]
    assert len(timer.marks['tracking']) == 2
    assert timer.collect() == pytest.approx({'tracking': 2.0})
    timer.remove()


def test_median_ms_and_summary_on_cpu():
    calls = []
    assert median_ms(lambda: calls.append(1), warmup=2, iters=3, device='cpu') >= 0
    assert len(calls) == 5
    with pytest.raises(ValueError, match='iters'):
        median_ms(lambda: None, 0, 0, device='cpu')
    assert latency_summary([3.0, 1.0, 2.0]) == dict(mean_ms=2.0, median_ms=2.0, min_ms=1.0,
                                                    max_ms=3.0)
    with pytest.raises(ValueError, match='no times'):
        latency_summary([])
    clock = DeviceClock(torch.device('cpu'))
    start = clock.mark()
    assert clock.ms(start, start + 0.25) == pytest.approx(250.0)


def test_graph_replay_ms_rejects_empty_runs():
    for iters, replays in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match='iters and replays'):
            graph_replay_ms(lambda: None, warmup=0, iters=iters, replays=replays)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_graph_replay_ms_times_a_captured_call():
    x = torch.ones(1 << 20, device='cuda')
    ms = graph_replay_ms(lambda: x.mul_(2.0), warmup=2, iters=3, replays=4)
    assert ms > 0
    # warm-up, capture (its kernels do not run), one replay, 3 x 4 timed replays
    assert x[0].item() == 2.0 ** (2 + 1 + 3 * 4)


def test_cpu_has_no_memory_stats_and_fp32_no_autocast():
    assert peak_memory_stats('cpu') == {}
    with autocast('cpu', None):
        assert not torch.is_autocast_enabled('cpu')
    with autocast('cpu', torch.bfloat16):
        assert torch.is_autocast_enabled('cpu')


def test_graph_counts_lists_the_wrapped_children():
    model = nn.Module()
    model.encoder = CUDAGraphModule(nn.Linear(2, 2))
    model.head = nn.Linear(2, 2)
    model.encoder.captures, model.encoder.replays, model.encoder.eager_calls = 1, 7, 2
    assert graph_counts(model) == {'encoder': dict(captures=1, replays=7, eager_calls=2)}


class CountingGraph(CUDAGraphModule):
    """Counts calls as CUDAGraphModule does on a GPU for one signature: ``warmup`` eager calls,
    then one capture followed by a replay, then replays (the module runs eagerly on CPU)."""

    def forward(self, x):
        self._pending_calls += 1
        if self._pending_calls > self.warmup:
            self.captures = max(self.captures, 1)
            self.replays += 1
        else:
            self.eager_calls += 1
        return self.module(x)


class ToyStreamer(nn.Module):
    """What profile_inference needs of a detector: predict, reset_tracks, a streaming state."""

    def __init__(self, backbone):
        super().__init__()
        self.img_backbone = backbone
        self.stream_state = None
        self.frames = 0

    def reset_tracks(self):
        self.stream_state = None

    def predict(self, inputs, clips):
        self.img_backbone(inputs['x'])
        self.frames += 1
        self.stream_state = {'tracks': types.SimpleNamespace(
            obj_idxes=torch.zeros(0, dtype=torch.long), scores=torch.zeros(0))}


def _stream_of_one_frame():
    sample = types.SimpleNamespace(metainfo={})
    sample.set_metainfo = sample.metainfo.update
    return {'x': torch.randn(1, 2)}, types.SimpleNamespace(video_data_samples=[sample])


@pytest.mark.parametrize('graph_warmup,max_warmup,warmup_frames,captured', [
    (None, 8, 1, 0),  # nothing graphed: the one start-of-sequence frame
    (2, 8, 4, 0),     # 2 eager calls, the capture frame, then the first steady replay
    (8, 8, 8, 1),     # the warm-up limit is hit: the profile says it holds a capture
])
def test_profile_streams_until_graphs_replay(tmp_path, graph_warmup, max_warmup, warmup_frames,
                                             captured):
    from trackocc.analysis.profiling import profile_inference
    linear = nn.Linear(2, 2)
    model = ToyStreamer(linear if graph_warmup is None else CountingGraph(linear, graph_warmup))
    out = tmp_path / 'profile.txt'
    counters = profile_inference(model, torch.device('cpu'), None, 3, str(out), 0,
                                 stream=_stream_of_one_frame(), max_warmup_frames=max_warmup)
    assert counters['warmup_frames'] == warmup_frames
    assert counters['graph_captures_during_profile'] == captured
    assert model.frames == warmup_frames + 3 and out.is_file()


def test_profile_streams_until_compiled_modules_stop_compiling(tmp_path):
    """A compiled sub-module (nothing graphed): its first call compiles, so the warm-up
    streams one more frame, which compiles nothing, and the profile holds no compile."""
    from trackocc.analysis.profiling import profile_inference
    torch._dynamo.reset()
    model = ToyStreamer(torch.compile(nn.Linear(2, 2), backend='eager'))
    counters = profile_inference(model, torch.device('cpu'), None, 3, str(tmp_path / 'p.txt'), 0,
                                 stream=_stream_of_one_frame())
    assert counters['warmup_frames'] == 2 and counters['compiles_during_profile'] == 0


class ToyTrainee(BaseModel):
    """A model with a linear loss: each SGD step moves ``weight`` by ``-lr * inputs``."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return {'loss': (self.weight * inputs).sum()}


def test_profile_training_runs_and_profiles_the_iterations(tmp_path):
    from mmengine.optim import OptimWrapper

    from trackocc.analysis.profiling import profile_training
    model = ToyTrainee()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5))
    out = tmp_path / 'train_profile.txt'
    counters = profile_training(model, torch.device('cpu'), optim_wrapper,
                                dict(inputs=torch.tensor([1.0, 2.0])), 3, str(out))
    # three forward / backward / step iterations (no sync listing iteration on CPU)
    assert counters == dict(profiled_iterations=3, optimizer_steps=3)
    assert torch.equal(model.weight.detach(), torch.tensor([-1.5, -3.0]))
    text = out.read_text()
    assert text.startswith('# 3 iterations, per iteration: ') and 'by self host time' in text
    assert 'synchronise' not in text
    with pytest.raises(ValueError, match='iters'):
        profile_training(model, torch.device('cpu'), optim_wrapper, {}, 0, str(out))


def _warn_sync_twice_and_warn_other():
    for _ in range(2):
        warnings.warn('called a synchronizing CUDA operation')  # the line counted
    warnings.warn('an unrelated warning')


def test_warning_sites_counts_by_line_and_passes_other_warnings_on():
    from trackocc.analysis.profiling import warning_sites
    line = _warn_sync_twice_and_warn_other.__code__.co_firstlineno + 2
    with pytest.warns(UserWarning, match='an unrelated warning'):
        sites = warning_sites(_warn_sync_twice_and_warn_other, 'synchroniz')
    assert list(sites.values()) == [2]
    assert f'test_analysis_helpers.py:{line}' in next(iter(sites))


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error without CUDA')
def test_collect_sync_sites_needs_cuda():
    from trackocc.analysis.profiling import collect_sync_sites
    calls = []
    with pytest.raises(RuntimeError, match='CUDA is not available'):
        collect_sync_sites(lambda: calls.append(1))
    assert not calls


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_collect_sync_sites_finds_item_on_cuda():
    from trackocc.analysis.profiling import collect_sync_sites
    x = torch.ones(4, device='cuda')
    assert collect_sync_sites(lambda: x * 2) == {}  # a kernel launch does not wait
    sites = collect_sync_sites(lambda: x.sum().item())
    assert sites and all('test_analysis_helpers.py:' in site for site in sites)
    assert torch.cuda.get_sync_debug_mode() == 0  # restored


def test_training_timer_pins_the_clip_where_the_dataloader_would():
    from mmengine.config import Config

    from trackocc.analysis.train_timing import pins_batches
    cuda, cpu = torch.device('cuda', 0), torch.device('cpu')
    pinning = Config(dict(train_dataloader=dict(pin_memory=True)))
    assert pins_batches(pinning, cuda)
    assert not pins_batches(pinning, cpu)  # without a GPU torch does not pin
    assert not pins_batches(Config(dict(train_dataloader=dict(pin_memory=False))), cuda)
    assert not pins_batches(Config(dict()), cuda)
