"""Benchmark a TrackOcc model without data loading: streaming inference or one training clip.

    python tools/analysis_tools/benchmark.py CONFIG [CHECKPOINT] [--frames 200] [--warmup 20]
        [--mode fp32 fp16 bf16 compile] [--json OUT.json]
    python tools/analysis_tools/benchmark.py CONFIG --train [--mode bf16] [--frames 10]

Inference streams ``--frames`` frames (after ``--warmup`` frames) of one synthetic batch (batch
1, the config's cameras at its input size, random images, a ring of pinhole cameras, the ego
moving 2 m per frame) through ``TrackOcc.predict``: the track state is carried from frame to
frame as in testing. Reported per mode: FPS (1000 / mean frame latency, frames run back to back),
the mean and median latency, the per-stage latency (CUDA events, or wall clock on CPU, around
the detector's sub-module calls: image backbone+neck, view transform, volume encoder, occupancy
encoder, refiner, decoder/head, tracking (query interaction + memory bank), panoptic merge;
``other`` is the rest of ``predict``) and the peak memory allocated.

``--train`` runs ``--frames`` training iterations (after ``--warmup``) of one 3-frame clip
(synthetic occupancy, instances and depth): data preprocessing, forward, backward, gradient
clipping and the optimizer step of the config's optimizer, under AMP for ``fp16`` / ``bf16``
(``AmpOptimWrapper`` with that dtype), plain fp32 for ``fp32``. Reported: time per iteration
(forward / backward+step split), peak memory, and the estimated time of the config's schedule
(``train_cfg.max_iters`` x time per iteration, one clip per GPU: the per-GPU time of a
data-parallel run, data loading and gradient all-reduce not included).

Modes: ``fp32``, ``fp16``, ``bf16`` (autocast), ``compile`` / ``compile-fp16`` /
``compile-bf16`` (``torch.compile`` of the dense sub-networks listed in ``--compile-modules``,
then as the named precision), ``graph`` / ``graph-fp16`` / ``graph-bf16`` (the sub-networks in
``--graph-modules`` replayed as CUDA graphs by ``trackocc.utils.cuda_graph``, no compiler).
Several modes run one after the other in one process; the JSON (written after every mode) maps
each mode to its result.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from trackocc.utils.cuda_graph import DETECTOR_GRAPH_MODULES, CUDAGraphModule, graph_modules
from trackocc.utils.synthetic_inputs import (CAM_YAWS, camera_matrices,  # noqa: F401
                                             input_geometry, synthetic_batch)

MODES = ('fp32', 'fp16', 'bf16', 'compile', 'compile-fp16', 'compile-bf16', 'graph',
         'graph-fp16', 'graph-bf16')
DTYPES = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# stage name -> detector attributes whose calls it sums (missing or None ones are skipped)
STAGES = (
    ('image_backbone_neck', ('img_backbone', 'img_neck')),
    ('view_transform', ('img_view_transformer',)),
    ('volume_encoder', ('volume_encoder_backbone', 'volume_encoder_neck')),
    ('occupancy_encoder', ('occ_encoder',)),
    ('refiner', ('refiner',)),
    ('decoder_head', ('pts_bbox_head',)),
    ('tracking', ('query_interaction', 'memory_bank')),
    ('panoptic_merge', ('_merge',)),
)
COMPILE_DEFAULT = ('img_backbone', 'img_neck', 'volume_encoder_backbone', 'volume_encoder_neck')


# -- model and synthetic inputs --------------------------------------------------------------
def quiet_logger() -> None:
    """Make a WARNING-level MMLogger current (no per-parameter init_weights listing)."""
    from mmengine.logging import MMLogger
    if not MMLogger.check_instance_created('trackocc_benchmark'):
        MMLogger.get_instance('trackocc_benchmark', log_level='WARNING')


def load_config(path: str, cfg_options: Optional[dict] = None):
    """Config with the default scope set and ``trackocc`` imported."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    import trackocc  # noqa: F401  (registers the modules)
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    return cfg


def build_model(cfg, checkpoint: Optional[str], device: str) -> torch.nn.Module:
    """Build ``cfg.model`` (no pretrained download: random weights unless ``checkpoint``)."""
    from mmdet3d.registry import MODELS
    model_cfg = cfg.model.copy()
    backbone = model_cfg.get('img_backbone', {})
    if isinstance(backbone.get('init_cfg'), dict) and \
            backbone['init_cfg'].get('type') == 'Pretrained':
        backbone['init_cfg'] = None
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False)
    return model.to(device)




# -- timing -----------------------------------------------------------------------------------
class Clock:
    """Marks on the device's timeline: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, start, end) -> float:
        """Milliseconds between two marks (call ``sync`` first)."""
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


class StageTimer:
    """Marks the start and end of every call of the detector's stage modules (forward hooks,
    a wrapper for methods) and sums them per stage for one frame."""

    def __init__(self, model, clock: Clock, stages=STAGES):
        self.clock = clock
        self.marks: Dict[str, List[list]] = {}
        self._handles, self._wrapped = [], []
        for stage, attrs in stages:
            for attr in attrs:
                target = getattr(model, attr, None)
                if target is None:
                    continue
                self.marks.setdefault(stage, [])
                if isinstance(target, torch.nn.Module):
                    self._handles.append(target.register_forward_pre_hook(
                        lambda *_, s=stage: self._start(s)))
                    self._handles.append(target.register_forward_hook(
                        lambda *_, s=stage: self._end(s)))
                elif callable(target):
                    setattr(model, attr, self._wrap(target, stage))
                    self._wrapped.append((model, attr))

    def _start(self, stage):
        self.marks[stage].append([self.clock.mark(), None])

    def _end(self, stage):
        self.marks[stage][-1][1] = self.clock.mark()

    def _wrap(self, fn: Callable, stage: str) -> Callable:
        def timed(*args, **kwargs):
            self._start(stage)
            out = fn(*args, **kwargs)
            self._end(stage)
            return out
        return timed

    def reset(self) -> None:
        for marks in self.marks.values():
            marks.clear()

    def collect(self) -> Dict[str, float]:
        """Milliseconds per stage since ``reset`` (synchronizes)."""
        self.clock.sync()
        return {s: sum(self.clock.ms(a, b) for a, b in m if b is not None)
                for s, m in self.marks.items()}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        for obj, attr in self._wrapped:
            delattr(obj, attr)  # back to the class method
        self._handles, self._wrapped = [], []


def memory_stats(device: torch.device) -> Dict[str, float]:
    if device.type != 'cuda':
        return {}
    return dict(peak_allocated_mib=torch.cuda.max_memory_allocated() / 2**20,
                peak_reserved_mib=torch.cuda.max_memory_reserved() / 2**20)


def reset_peak(device: torch.device) -> None:
    """Restart the peak-memory statistics (the caching allocator keeps its blocks)."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def reset_memory(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def split_mode(mode: str):
    """'compile-bf16' -> ('compile', torch.bfloat16); 'graph' -> ('graph', None);
    'fp32' -> (None, None)."""
    if mode not in MODES:
        raise ValueError(f'benchmark: unknown mode {mode!r}, choose from {MODES}')
    kind = mode.split('-', 1)[0] if mode.startswith(('compile', 'graph')) else None
    precision = mode.split('-', 1)[1] if '-' in mode else ('fp32' if kind else mode)
    return kind, DTYPES[precision]


def autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def prepare_inference_model(model, fuse: bool, channels_last: bool) -> dict:
    """Optional inference transforms; returns what was done, with the largest difference
    of the head's mask logits (tensor mode, fresh queries) relative to their largest
    magnitude before/after."""
    done = dict(fuse_conv_bn=False, channels_last=False)
    if not (fuse or channels_last):
        return done
    from trackocc.utils.fuse_conv_bn import fuse_conv_bn
    model.eval()
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=False), False)

    def mask_logits():
        with torch.no_grad():
            out = model._forward(data['inputs'], data['data_samples'])
        return torch.cat([out['thing_masks'][-1], out['stuff_masks'][-1]], 1).float()

    before = mask_logits()
    if fuse:
        done['fuse_conv_bn'] = fuse_conv_bn(model)
    if channels_last:
        for name in ('img_backbone', 'img_neck'):
            getattr(model, name).to(memory_format=torch.channels_last)
        for name in ('volume_encoder_backbone', 'volume_encoder_neck'):
            getattr(model, name).to(memory_format=torch.channels_last_3d)
        done['channels_last'] = True
    after = mask_logits()
    diff = float((after - before).abs().max() / before.abs().max().clamp(min=1e-12))
    if not diff <= 1e-2:  # TF32 convolutions give ~1e-3; a wrong fold gives O(1)
        raise RuntimeError(f'benchmark: the transformed model disagrees with the original '
                           f'(mask logits relative difference {diff:.3g}); not benchmarking it')
    done['transform_check_rel_diff'] = diff
    model.reset_tracks()
    return done


def compile_modules(model, names, mode: Optional[str] = None) -> List[str]:
    """Replace each named sub-module by its ``torch.compile`` d wrapper (once)."""
    done = []
    for name in names:
        module = getattr(model, name, None)
        if module is None:
            continue
        if not hasattr(module, '_orig_mod'):
            setattr(model, name, torch.compile(module, mode=mode))
            model._cudagraph_steps = mode in ('reduce-overhead', 'max-autotune')
        done.append(name)
    return done


def new_step(model) -> None:
    """Tell CUDA-graph trees that a new frame starts (the outputs of the last replay may be
    overwritten; a frame never reads them)."""
    if getattr(model, '_cudagraph_steps', False):
        torch.compiler.cudagraph_mark_step_begin()


def summary(times: List[float]) -> Dict[str, float]:
    return dict(mean_ms=statistics.fmean(times), median_ms=statistics.median(times),
                min_ms=min(times), max_ms=max(times))


# -- runs -------------------------------------------------------------------------------------
def cap_live_tracks(model, max_live: int) -> int:
    """Keep at most ``max_live`` live tracks (the highest scores) in the streaming state, and
    every fresh query; returns the number of live tracks kept.

    Random weights and random images give nearly every query a confident score, so without a
    cap a new track would be born from almost every fresh query on every frame and the query
    set (and the (Q, X*Y*Z) mask logits) would grow without bound, unlike a trained model on a
    real scene. ``max_live <= 0`` disables the cap. Works on the tracks the frame ended with
    (before the deferred query interaction, see ``trackocc.models.trackers.StreamState``),
    without building the next frame's queries here."""
    state = model._test_state
    pending = 'pending' in state
    tracks = state['pending'] if pending else state['tracks']
    active = tracks.obj_idxes >= 0
    num = int(active.sum())
    if max_live <= 0 or num <= max_live:
        return num
    act_idx = torch.nonzero(active, as_tuple=False)[:, 0]
    best = tracks.scores[act_idx].float().argsort(descending=True)[:max_live]
    keep = ~active
    keep[act_idx[best]] = True
    if pending:
        state.set_pending(tracks[keep])
    else:
        state['tracks'] = tracks[keep]
    return max_live


def bench_inference(model, device: torch.device, dtype, frames: int, warmup: int,
                    max_live_tracks: int = 64) -> dict:
    """Stream ``warmup + frames`` frames through ``predict`` (live tracks capped at
    ``max_live_tracks``, see :func:`cap_live_tracks`); statistics of the last ``frames``."""
    model.eval()
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=False), False)
    inputs, clip = data['inputs'], data['data_samples'][0]
    frame = clip.video_data_samples[0]
    clock = Clock(device)
    timer = StageTimer(model, clock)
    model.reset_tracks()
    reset_memory(device)
    totals, stages, live = [], [], []
    try:
        for i in range(warmup + frames):
            if i == warmup:  # cuDNN autotuning workspaces of the warm-up are not counted
                reset_peak(device)
            ego = np.eye(4)
            ego[0, 3] = 2.0 * i
            frame.set_metainfo(dict(start_of_sequence=i == 0, frame_idx=i, sample_idx=i,
                                    ego2global=ego, timestamp=0.5 * i))
            timer.reset()
            start = clock.mark()
            with torch.no_grad(), autocast(device, dtype):
                new_step(model)
                model.predict(inputs, [clip])
            end = clock.mark()
            per_stage = timer.collect()
            num_live = cap_live_tracks(model, max_live_tracks)
            if i >= warmup:
                totals.append(clock.ms(start, end))
                stages.append(per_stage)
                live.append(num_live)
    finally:
        timer.remove()
    stage_ms = {s: statistics.fmean(d[s] for d in stages) for s in stages[0]}
    mean_total = statistics.fmean(totals)
    stage_ms['other'] = max(mean_total - sum(stage_ms.values()), 0.0)
    pred = frame.pred_occ
    return dict(frames=frames, warmup=warmup, max_live_tracks=max_live_tracks,
                fps=1000.0 / mean_total, latency=summary(totals),
                stage_ms=stage_ms, mean_live_tracks=statistics.fmean(live),
                occupied_voxels_last_frame=int((pred.semantics != model.num_classes - 1).sum()),
                **memory_stats(device))


def _stream_frames(model, inputs, clip, dtype, device, frames: int, max_live_tracks: int):
    with torch.no_grad(), autocast(device, dtype):
        for _ in range(frames):
            new_step(model)
            model.predict(inputs, [clip])
            cap_live_tracks(model, max_live_tracks)


def profile_inference(model, device: torch.device, dtype, frames: int, out_file: str,
                      max_live_tracks: int = 64, row_limit: int = 40) -> dict:
    """torch.profiler tables of ``frames`` streamed frames: ops sorted by device time and by
    host time, and per frame: kernel launches, summed kernel time, host-device syncs
    (``cudaStreamSynchronize`` / device-to-host copies). On CUDA it also lists the Python
    lines that synchronise (``torch.cuda.set_sync_debug_mode``) during one more frame.

    Returns the per-frame counters."""
    from torch.profiler import ProfilerActivity, profile
    model.eval()
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=False), False)
    inputs, clip = data['inputs'], data['data_samples'][0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    model.reset_tracks()
    clip.video_data_samples[0].set_metainfo(dict(start_of_sequence=True))
    _stream_frames(model, inputs, clip, dtype, device, 1, max_live_tracks)  # starts the sequence
    clip.video_data_samples[0].set_metainfo(dict(start_of_sequence=False))
    with profile(activities=activities) as prof:
        _stream_frames(model, inputs, clip, dtype, device, frames, max_live_tracks)
    events = prof.key_averages()
    counters = dict(profiled_frames=frames)
    if device.type == 'cuda':
        kernels = [e for e in prof.events() if getattr(e.device_type, 'name', '') == 'CUDA']
        counters['kernels_per_frame'] = len(kernels) / frames
        counters['kernel_ms_per_frame'] = sum(
            getattr(e, 'device_time', None) or getattr(e, 'cuda_time', 0.0)
            for e in kernels) / 1e3 / frames
        by_name = {e.key: e for e in events}
        for name in ('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaMemcpyAsync',
                     'cudaLaunchKernel', 'cudaEventSynchronize'):
            if name in by_name:
                counters[f'{name}_per_frame'] = by_name[name].count / frames
                counters[f'{name}_ms_per_frame'] = by_name[name].cpu_time_total / 1e3 / frames
    with open(out_file, 'w') as f:
        f.write(f'# {frames} frames, per frame: {json.dumps(counters)}\n\n')
        if device.type == 'cuda':
            f.write('## by self device time\n')
            f.write(events.table(sort_by='self_cuda_time_total', row_limit=row_limit))
        f.write('\n\n## by self host time\n')
        f.write(events.table(sort_by='self_cpu_time_total', row_limit=row_limit))
        if device.type == 'cuda':
            f.write('\n\n## Python lines that synchronise (one frame)\n')
            try:
                sites = sync_sites(model, inputs, clip, dtype, device, max_live_tracks)
            except Exception as exc:  # noqa: BLE001  (the tables above stay useful)
                sites = {f'sync listing failed: {type(exc).__name__}: {exc}': 0}
            counters['sync_sites_per_frame'] = sum(sites.values())
            for site, count in sites.items():
                f.write(f'{count:4d}  {site}\n')
    return counters


def sync_sites(model, inputs, clip, dtype, device, max_live_tracks: int) -> Dict[str, int]:
    """Stream one frame with ``torch.cuda.set_sync_debug_mode('warn')``; count the warnings by
    the innermost trackocc/mmdet/mmcv source line of the Python stack that raised them."""
    import warnings
    sites: Dict[str, int] = {}

    def record(message, category, filename, lineno, file=None, line=None):
        if 'synchroniz' not in str(message):
            return
        frames = [fr for fr in traceback.extract_stack()[:-1]
                  if any(k in fr.filename for k in ('trackocc', 'mmdet', 'mmcv', 'mmengine'))
                  and 'benchmark.py' not in fr.filename]
        where = (f'{frames[-1].filename.split("site-packages/")[-1]}:{frames[-1].lineno} '
                 f'{frames[-1].line}' if frames else f'{filename}:{lineno}')
        sites[where] = sites.get(where, 0) + 1

    saved = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode('warn')
        try:
            with torch.no_grad(), autocast(device, dtype):
                new_step(model)
                model.predict(inputs, [clip])
        finally:
            torch.cuda.set_sync_debug_mode('default')
            warnings.showwarning = saved
    cap_live_tracks(model, max_live_tracks)
    return dict(sorted(sites.items(), key=lambda kv: -kv[1]))


def build_train_optim_wrapper(cfg, model, dtype):
    """The config's optimizer, clipping and param-wise settings; AMP with ``dtype`` or fp32."""
    from mmengine.optim import build_optim_wrapper
    ow = cfg.optim_wrapper.copy()
    for key in ('loss_scale', 'dtype'):
        ow.pop(key, None)
    if dtype is None:
        ow['type'] = 'OptimWrapper'
    else:
        ow.update(type='AmpOptimWrapper', loss_scale='dynamic',
                  dtype='float16' if dtype == torch.float16 else 'bfloat16')
    return build_optim_wrapper(model, ow)


def bench_train(cfg, model, device: torch.device, dtype, iters: int, warmup: int,
                clip_len: int = 3) -> dict:
    """``warmup + iters`` training iterations on one synthetic clip of ``clip_len`` frames."""
    model.train()
    optim_wrapper = build_train_optim_wrapper(cfg, model, dtype)
    batch = synthetic_batch(model, clip_len, with_gt=True)
    clock = Clock(device)
    fwd, bwd, total, losses_seen = [], [], [], []
    reset_memory(device)
    for i in range(warmup + iters):
        if i == warmup:
            reset_peak(device)
        t0 = clock.mark()
        with optim_wrapper.optim_context(model):
            data = model.data_preprocessor(batch, True)
            losses = model._run_forward(data, mode='loss')
        parsed, log_vars = model.parse_losses(losses)
        t1 = clock.mark()
        optim_wrapper.update_params(parsed)
        t2 = clock.mark()
        clock.sync()
        if i >= warmup:
            fwd.append(clock.ms(t0, t1))
            bwd.append(clock.ms(t1, t2))
            total.append(clock.ms(t0, t2))
            losses_seen.append(float(torch.as_tensor(log_vars['loss']).detach()))
    iter_s = statistics.fmean(total) / 1e3
    max_iters = int(cfg.train_cfg.get('max_iters', 0) or 0)
    gpus = int(cfg.get('auto_scale_lr', {}).get('base_batch_size', 1) or 1)
    out = dict(iters=iters, warmup=warmup, clip_frames=clip_len, iter_time=summary(total),
               forward_ms=statistics.fmean(fwd), backward_step_ms=statistics.fmean(bwd),
               loss_first=losses_seen[0], loss_last=losses_seen[-1], **memory_stats(device))
    if max_iters:
        out.update(schedule_max_iters=max_iters, schedule_gpus=gpus,
                   schedule_hours=max_iters * iter_s / 3600.0)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark a TrackOcc model (no data loading)')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None)
    parser.add_argument('--frames', type=int, default=200,
                        help='measured frames (inference) or iterations (--train)')
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--mode', nargs='+', default=['fp32'], choices=MODES)
    parser.add_argument('--train', action='store_true',
                        help='one 3-frame clip forward + backward + step per iteration')
    parser.add_argument('--clip-frames', type=int, default=3)
    parser.add_argument('--compile-modules', nargs='+', default=list(COMPILE_DEFAULT))
    parser.add_argument('--graph-modules', nargs='+', default=list(DETECTOR_GRAPH_MODULES),
                        help='sub-modules the graph* modes run as CUDA graphs '
                        '(trackocc.utils.cuda_graph.CUDAGraphModule)')
    parser.add_argument('--compile-mode', default=None,
                        choices=['default', 'reduce-overhead', 'max-autotune',
                                 'max-autotune-no-cudagraphs'],
                        help='torch.compile mode of the compile* modes (reduce-overhead: '
                        'CUDA graphs)')
    parser.add_argument('--max-live-tracks', type=int, default=64,
                        help='cap of live tracks carried between frames (0: no cap; random '
                        'weights otherwise grow the track set every frame)')
    parser.add_argument('--cudnn-benchmark', action=argparse.BooleanOptionalAction,
                        default=True, help='let cuDNN pick its fastest convolution algorithms '
                        'for the fixed input shapes (default on)')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold inference batch norms into their convolutions first '
                        '(checked against the unfused outputs, see fuse_check)')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels-last memory format for the 2D image and 3D volume '
                        'convolution stacks')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write the results here (after every mode)')
    parser.add_argument('--profile', metavar='PREFIX',
                        help='also write a torch.profiler table of 5 inference frames per mode '
                        'to PREFIX<mode>.txt')
    parser.add_argument('--keep-going', action='store_true',
                        help='record a failing mode in the JSON and go on with the next')
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='key=value overrides of the config')
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        parser.error('--frames must be >= 1 and --warmup >= 0')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet_logger()
    from mmengine.config import DictAction
    opts = None
    if args.cfg_options:
        ns = argparse.Namespace()
        DictAction(option_strings=[], dest='o')(None, ns, args.cfg_options)
        opts = ns.o
    cfg = load_config(args.config, opts)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    model = build_model(cfg, args.checkpoint, args.device)
    num_cams, img_hw = input_geometry(model)
    transforms = prepare_inference_model(model, args.fuse_conv_bn, args.channels_last)
    result = dict(config=args.config, checkpoint=args.checkpoint,
                  kind='train' if args.train else 'inference', device=str(device),
                  device_name=torch.cuda.get_device_name(device) if device.type == 'cuda'
                  else 'cpu', torch=torch.__version__, num_cams=num_cams, input_hw=list(img_hw),
                  occ_size=list(model.occ_size),
                  params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                  cudnn_benchmark=args.cudnn_benchmark, **transforms, modes={})
    for mode in args.mode:
        kind, dtype = split_mode(mode)
        t0 = time.perf_counter()
        try:
            if kind == 'compile':
                result['compiled_modules'] = compile_modules(model, args.compile_modules,
                                                             args.compile_mode)
                result['compile_mode'] = args.compile_mode or 'default'
            if kind == 'graph':
                if device.type != 'cuda':
                    raise RuntimeError('benchmark: graph modes need a CUDA device')
                result['graphed_modules'] = graph_modules(model, args.graph_modules)
            if args.train:
                res = bench_train(cfg, model, device, dtype, args.frames, args.warmup,
                                  args.clip_frames)
            else:
                res = bench_inference(model, device, dtype, args.frames, args.warmup,
                                      args.max_live_tracks)
                if args.profile:
                    res['profile'] = profile_inference(model, device, dtype, 5,
                                                       f'{args.profile}{mode}.txt',
                                                       args.max_live_tracks)
        except Exception as exc:  # noqa: BLE001  (reported per mode with --keep-going)
            if not args.keep_going:
                raise
            res = dict(error=f'{type(exc).__name__}: {exc}'.strip()[:2000])
            traceback.print_exc()
        graphs = {name: dict(captures=m.captures, replays=m.replays)
                  for name, m in model.named_children() if isinstance(m, CUDAGraphModule)}
        if graphs and 'error' not in res:
            res['cuda_graphs'] = graphs
        res['wall_s'] = time.perf_counter() - t0
        result['modes'][mode] = res
        print(f'[benchmark] {mode}: ' + json.dumps(res, default=float), flush=True)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump(result, f, indent=2, default=float)
    return result


if __name__ == '__main__':
    main()
