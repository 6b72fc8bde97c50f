"""Benchmark a TrackOcc model without data loading: streaming inference or one training clip.

    python tools/analysis_tools/benchmark.py CONFIG [CHECKPOINT] [--frames 200] [--warmup 20]
        [--mode fp32 fp16 bf16 compile] [--json OUT.json]
    python tools/analysis_tools/benchmark.py CONFIG CHECKPOINT --data-root ROOT \
        [--mode fp32 graph-bf16] [--max-seqs N] [--warmup 20] [--json OUT.json]
    python tools/analysis_tools/benchmark.py CONFIG --train [--mode bf16] [--frames 10] \
        [--profile PREFIX] [--profile-steps 5]
    bash tools/analysis_tools/dist_benchmark.sh CONFIG GPUS --train [--mode bf16] [--json OUT]

Inference streams ``--frames`` frames (after ``--warmup`` frames) of one synthetic batch (batch
1, the config's cameras at its input size, random images, a ring of pinhole cameras, the ego
moving 2 m per frame) through ``TrackOcc.predict``: the track state is carried from frame to
frame as in testing. Reported per mode: FPS (1000 / mean frame latency, frames run back to back),
the mean and median latency, the per-stage latency (CUDA events, or wall clock on CPU, around
the detector's sub-module calls: image backbone+neck, view transform, volume encoder, occupancy
encoder, refiner, decoder/head, tracking (query interaction + memory bank), panoptic merge;
``other`` is the rest of ``predict``) and the peak memory allocated.

With ``--data-root`` (held-out mode, :mod:`trackocc.analysis.held_out_stream`) the frames are
the config's test data set under that root (its test pipeline; the first ``--max-seqs``
sequences), all loaded, preprocessed and moved to the device once before any timing. Each mode
streams ``--warmup`` frames untimed, resets the tracks and then streams every frame exactly once
in order, all timed (the tracks reset at each sequence start; no live-track cap), so the scored
pass is the test loop's stream. Reported in addition, per frame and as means: ``live_tracks``,
``occupied_voxels`` (non-free voxels), ``births`` (new track ids); and the OccSTQ / AQ / mIoU of
the predictions (kept on the host, scored after timing by ``OccSTQMetric``, ``reference`` and
``strict`` settings as ``tools/evaluate_predictions.py`` without / with ``--strict``).
``occstq_guard`` gives, for every mode after the first, |OccSTQ(mode) - OccSTQ(first mode)| in
points (x 100) and ``pass`` (<= 0.1 under both settings, issue 16), with each sequence's signed
difference; every mode has ``occstq_by_sequence``, and every mode after the first
``agreement``: where its predictions differ from the first mode's (voxels of another class or
track id per frame, per sequence). The peak memory includes
the preloaded inputs (``preloaded_inputs_mib``). ``--frames`` and ``--max-live-tracks`` are
not used in this mode.

``--train`` runs ``--frames`` training iterations (after ``--warmup``) of one 3-frame clip
(synthetic occupancy, instances and depth): data preprocessing, forward, backward, gradient
clipping and the optimizer step of the config's optimizer, under AMP for ``fp16`` / ``bf16``
(the AMP wrapper of the config's family with that dtype, e.g. ``HostSyncFreeAmpOptimWrapper``),
full precision for ``fp32``. After each iteration, as in the runner, the config's
``default_hooks.runtime_info`` puts the log variables into the message hub (``log_ms``;
MMEngine's ``RuntimeInfoHook`` reads each on the host, ``HostSyncFreeRuntimeInfoHook`` every
logger interval); nothing else waits for the device between iterations (since 2026-12-05;
before, every iteration ended with a device synchronisation). Reported: time per iteration
(``iter_time``: each iteration's span on the device's timeline; forward / backward+step
split), ``wall_ms_per_iter`` (the timed iterations' wall-clock time per iteration, which counts
the host running ahead), peak memory, and the estimated time of the config's schedule
(``train_cfg.max_iters`` x time per iteration, one clip per GPU: the per-GPU time of a
data-parallel run, data loading and gradient all-reduce not included). The config's EMA hook
(``custom_hooks``: ``EMAHook`` or a subclass) updates its average after every iteration as in
the runner, inside the timed iteration (``ema``: its averaged model, ``ema_ms``: its mean
time; ``--no-ema`` leaves it out, as runs before 2026-12-03 did). The config's
``default_hooks.garbage_collection`` (``GarbageCollectionHook``: Python's collector every
``interval`` iterations, not inside them) runs as in the runner too (``gc_hook_ms``;
``--no-gc-hook``: the automatic collector, as runs before 2026-12-04); ``gc`` counts the
collections made during the timed iterations and their pauses.

``--train --launcher pytorch`` (under ``torchrun``, e.g. ``dist_benchmark.sh``) times the same
iterations data-parallel (:mod:`trackocc.analysis.data_parallel`): one process per device
(``cuda:LOCAL_RANK`` with NCCL, or the CPU with gloo), the model wrapped as the runner wraps it
(``sync_bn``, ``model_wrapper_cfg`` or ``MMDistributedDataParallel`` with the config's
``find_unused_parameters``), each rank its own clip (images seeded by the rank), so the
gradients are all-reduced in every backward. Each rank times its own iterations; rank 0 writes
the JSON and prints; the other ranks print errors only. A mode's result: ``world_size``,
``backend``, ``wrapper`` and its ``synchronised_batch_norms`` / ``host_sync_free_batch_norms``,
``ranks`` (per rank: ``iter_time``, forward / backward+step ms, losses, peak
memory, ``param_checksum_start`` / ``param_checksum`` and ``param_max_abs_diff_to_rank0``
after the timed iterations), ``iter_time.mean_ms`` / ``median_ms`` = the largest of the
ranks' means / medians (a step is as slow as the slowest rank; ``slowest_rank``),
``wall_ms_per_iter`` (the slowest rank's), ``param_max_abs_diff`` (0: the ranks' parameters
stayed equal) and the schedule estimate of
``iter_time.mean_ms``. Refused with ``--launcher``: inference, ``--profile`` (profile one
process) and ``--keep-going`` (a failed rank would leave its peers in the all-reduce).

``--profile PREFIX`` writes ``PREFIX<mode>.txt`` per mode (:mod:`trackocc.analysis.profiling`):
torch.profiler tables (ops by self device time on CUDA, by self host time always) of
``--profile-steps`` more frames (inference, after the timed ones: the synthetic stream, or a
held-out frame from the middle of the stream) or more training iterations (``--train``, after
the timed ones, same iteration as the timed ones: data preprocessing, forward, loss, backward,
clipping, optimizer step); a header with counters per frame / iteration (on CUDA: kernels,
kernel ms, ``cudaStreamSynchronize`` / ``cudaMemcpyAsync`` / ``cudaLaunchKernel`` ... counts and
host ms; in training ``optimizer_steps``) that are also the mode's ``profile`` in the JSON; and
on CUDA the Python source lines that synchronise the host with the device during one more frame
/ iteration (``torch.cuda.set_sync_debug_mode('warn')``, by the innermost trackocc / mmdet /
mmcv / mmengine line, most frequent first; a synchronisation in the backward pass is listed at
the line that calls ``backward``). The listing is CUDA-only: on CPU the file has the host
tables only.

Modes: ``fp32``, ``fp16``, ``bf16`` (autocast), ``compile`` / ``compile-fp16`` /
``compile-bf16`` (``torch.compile`` of the dense sub-networks listed in ``--compile-modules``,
then as the named precision), ``graph`` / ``graph-fp16`` / ``graph-bf16`` (the sub-networks in
``--graph-modules`` replayed as CUDA graphs by ``trackocc.utils.cuda_graph``; no compiler unless
``--graph-compile-modules`` names sub-modules, e.g. ``occ_encoder.upsampler``, that are
``torch.compile`` d first and whose fused kernels the graphs then capture).
Several modes run one after the other in one process; the JSON (written after every mode) maps
each mode to its result.

``--query-budget N`` sets ``model.query_budget``: the head runs on exactly N thing query rows
every frame (fresh queries + live tracks, padded, with a validity mask), in every mode; more
queries than N stop the run with an error (``--max-live-tracks`` must leave room for the fresh
queries; the held-out mode has no cap). Only with a budget is the head's input shape fixed, so
only then can ``pts_bbox_head`` (decoder + head) and ``panoptic_merge`` (the merge, on the
head's budget rows, reading its mask logits in place) be in ``--graph-modules``.

``--graph-stable-outputs NAME...``: those graphed modules return their outputs at stable
addresses (``CUDAGraphModule.stable_output``: one device copy per output tensor, captured in
the graph), so the graphs downstream keep theirs when these warm up and capture again (the
view transformer and the occupancy encoder at each new camera rig).

``--graph-rekey-warmup N``: a graphed module that captured before gets N eager calls at a new
signature (a new camera rig) instead of the first signature's warm-up; 0 captures at once (the
capture's own eager run rebuilds the rig's caches).

``--fixed-track-rows`` (with ``--query-budget``): the tracks keep the budget's row count from
frame to frame (``TrackOcc.fixed_track_rows``), so the tracking modules run on fixed shapes.
Only then may ``--graph-modules`` name the tracking: ``memory_bank`` and ``query_interaction``
each as a graph, or ``track_carry`` (both of them, the glue between them and the reference
points' ego alignment as one graph; not together with them), and ``track_settle`` (the
record of the head's outputs, the tracker's update and the merge as one graph; not together
with ``panoptic_merge``).

``--fixed-rig-inputs``: what depends only on the camera rig (the bev_pool ranks, the occupancy
encoder's camera points and query plan) is passed to the view transformer and the occupancy
encoder as inputs of fixed sizes at fixed addresses (``TrackOcc.fixed_rig_inputs``), so that
their graphs serve every rig instead of capturing again at each new one.

``--ab-graph-modules`` / ``--ab-compile-modules`` / ``--ab-stable-outputs`` /
``--ab-fixed-track-rows`` / ``--ab-graph-rekey-warmup`` / ``--ab-ungraph-modules`` /
``--ab-float32-queries`` / ``--ab-float32-masks`` / ``--ab-graph-keep-memory`` /
``--ab-fixed-rig-inputs`` compare a change
of the fast path inside one process (the host's speed varies between processes more than a
millisecond): every graph mode runs ``--ab-rounds`` times as it is (A: ``graph-bf16``,
``graph-bf16#2``, ...) and, alternating with it, with those modules also graphed, compiled or
made stable, the tracks' rows fixed, the graphs' warm-up at a new rig changed, or the
head's decoder queries or its mask logits in float32 under autocast
(``TrackOccHead.float32_queries`` / ``float32_masks``; the head's graph captures again at each
switch), or the captures made without ``torch.cuda.graph``'s
synchronisation and cache flush (``--graph-keep-memory``), or the rig's inputs fixed
(``--fixed-rig-inputs``) (B:
``graph-bf16+ab``, ``graph-bf16+ab#2``, ...;
:class:`trackocc.analysis.ab_variant.ModuleVariant`). With ``--data-root``, ``ab_summary``
gives each side's steady and all-frame FPS, its steady stage times and B - A per stage.
With ``--train``, ``--ab-setting KEY=VALUE ...`` (model attributes, e.g.
``clip_image_batch=False``) runs each mode's training iterations as A/B rounds in one process
(the host's speed moves between processes by more than most changes); ``ab_summary`` gives
each side's per-round mean iteration, forward and backward + step times, their means and B / A.

``--emulate-graphs`` runs the graph modes on any device with the CUDA graphs emulated
(``CUDAGraphModule(emulate=True)``, :mod:`trackocc.utils.recorded_graph`): a check on the CPU
that a combination of graphs, settings and A/B switches captures, replays and predicts what
the fp32 eager mode predicts, before it costs GPU time. Its timings say nothing about graphs.

``--channels-last`` (inference) runs each mode inside a :class:`ChannelsLast` block
(:mod:`trackocc.utils.memory_format`): the convolution weights of the image backbone / neck /
depth net and of the volume encoder in ``channels_last`` / ``channels_last_3d``,
their inputs converted once, their outputs handed on contiguous; nested inside
``--autocast-weights``. Checked first against the default layout (float32 mask logits, as
``--fuse-conv-bn``); ``channels_last`` in a mode's result: convolutions converted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
import traceback
import warnings
from typing import List, Optional

import torch

from trackocc.analysis.ab_options import (ab_on, ab_record, ab_settings, add_ab_arguments,
                                          check_ab_arguments, run_plan)
from trackocc.analysis.ab_variant import ModuleVariant, ab_summary, train_ab_summary
from trackocc.analysis.data_parallel import (gather_to_rank0, init_data_parallel,
                                             join_rank_results, wrap_data_parallel,
                                             wrapper_facts)
from trackocc.analysis.held_out_scoring import occstq_guard, prediction_agreement, score_all
from trackocc.analysis.held_out_stream import (check_data_root, inputs_mib, load_held_out_frames,
                                               stream_held_out)
from trackocc.analysis.model_setup import build_model, load_config, quiet_logger, set_query_budget
from trackocc.analysis.precision import MODES, probe_autocast_weights, split_mode
from trackocc.analysis.profiling import profile_inference
from trackocc.analysis.synthetic_timing import stream_synthetic
from trackocc.analysis.train_timing import schedule_estimate, time_training
from trackocc.evaluation.functional import atomic_write_text
from trackocc.utils.compile_modules import (COMPILE_MODULES, CUDAGRAPH_COMPILE_MODES,
                                            TRAINING_COMPILE_MODULES, compile_modules,
                                            dynamic_shape_modules,
                                            float32_matmul_precision)
from trackocc.utils.cuda_graph import (BUDGET_GRAPH_MODULES, DETECTOR_GRAPH_MODULES,
                                      HEAD_GRAPH_MODULE, TRACKING_GRAPH_MODULES,
                                      check_graph_names, graph_counts, graph_modules)
from trackocc.utils.distributed import close_process_group
from trackocc.utils.memory_format import ChannelsLast
from trackocc.utils.synthetic_inputs import input_geometry, synthetic_batch


# -- model transforms -------------------------------------------------------------------------
def prepare_inference_model(model, fuse: bool, channels_last: bool) -> dict:
    """Optional inference transforms; returns what was done, with the largest difference
    of the head's mask logits (tensor mode, fresh queries) relative to their largest
    magnitude before/after. Batch norms are folded here for good; channels-last
    (:class:`ChannelsLast`) is only checked here (float32, after the fold) and held by each
    mode in a block."""
    done = dict(fuse_conv_bn=False, channels_last=False)
    if not (fuse or channels_last):
        return done
    from trackocc.utils.fuse_conv_bn import fuse_conv_bn
    model.eval()
    data = model.data_preprocessor(synthetic_batch(model, 1, with_gt=False), False)

    def mask_logits():
        with torch.no_grad():
            out = model(data['inputs'], data['data_samples'], mode='tensor')
        return torch.cat([out['thing_masks'][-1], out['stuff_masks'][-1]], 1).float()

    before = mask_logits()
    if fuse:
        done['fuse_conv_bn'] = fuse_conv_bn(model)
    with ChannelsLast(model) if channels_last else contextlib.nullcontext():
        after = mask_logits()
    done['channels_last'] = channels_last
    diff = float((after - before).abs().max() / before.abs().max().clamp(min=1e-12))
    if not diff <= 1e-2:  # TF32 convolutions give ~1e-3; a wrong fold gives O(1)
        raise RuntimeError(f'benchmark: the transformed model disagrees with the original '
                           f'(mask logits relative difference {diff:.3g}); not benchmarking it')
    done['transform_check_rel_diff'] = diff
    model.reset_tracks()
    return done


# -- runs -------------------------------------------------------------------------------------
def run_mode(args, cfg, model, device: torch.device, dtype, mode: str, held_out,
             before_frame, backend: Optional[str] = None) -> Optional[dict]:
    """One mode's measurement: training iterations, the held-out stream (+ its OccSTQ) or
    the synthetic stream, and its profile with ``--profile``.

    ``backend`` (``--launcher``: ``model`` is wrapped for data-parallel training): every rank
    times its iterations; rank 0 returns the ranks' results joined
    (:func:`join_rank_results`), the others None."""
    if backend is not None:
        res = time_training(cfg, model, device, dtype, args.frames, args.warmup,
                            args.clip_frames, data_parallel=True, with_ema=not args.no_ema,
                            with_gc_hook=not args.no_gc_hook, before_iteration=before_frame)
        ranks = gather_to_rank0(res)
        if ranks is None:
            return None
        res = join_rank_results(ranks, backend)
        res.update(wrapper_facts(model), **schedule_estimate(cfg, res['iter_time']['mean_ms']))
        return res
    if args.train:
        res = time_training(cfg, model, device, dtype, args.frames, args.warmup,
                            args.clip_frames,
                            f'{args.profile}{mode}.txt' if args.profile else None,
                            args.profile_steps, with_ema=not args.no_ema,
                            with_gc_hook=not args.no_gc_hook, before_iteration=before_frame)
    elif held_out is not None:
        res = stream_held_out(model, held_out, device, dtype, args.warmup,
                              before_frame)
        res['occstq_by_sequence'] = []  # the reference settings' scores of each sequence
        res['occstq'] = score_all([f.gt for f in held_out], res['predictions'],
                                  res['occstq_by_sequence'])
        if args.profile:  # real tracks: a frame from the middle of the stream
            mid = held_out[len(held_out) // 2]
            sample = mid.clip.video_data_samples[0]
            start = sample.metainfo.get('start_of_sequence', False)
            try:
                res['profile'] = profile_inference(
                    model, device, dtype, args.profile_steps, f'{args.profile}{mode}.txt', 0,
                    before_frame=before_frame, stream=(mid.inputs, mid.clip))
            finally:  # the profiler sets the flag; the next mode streams this frame
                sample.set_metainfo(dict(start_of_sequence=start))
                sample.pop('pred_occ', None)
    else:
        res = stream_synthetic(model, device, dtype, args.frames, args.warmup,
                               args.max_live_tracks, before_frame)
        if args.profile:
            res['profile'] = profile_inference(model, device, dtype, args.profile_steps,
                                               f'{args.profile}{mode}.txt',
                                               args.max_live_tracks,
                                               before_frame=before_frame)
    return res


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Benchmark a TrackOcc model (no data loading timed)')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None)
    parser.add_argument('--frames', type=int, default=200,
                        help='measured frames (inference) or iterations (--train)')
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--mode', nargs='+', default=['fp32'], choices=MODES)
    parser.add_argument('--train', action='store_true',
                        help='one 3-frame clip forward + backward + step per iteration')
    parser.add_argument('--clip-frames', type=int, default=3)
    parser.add_argument('--no-ema', action='store_true',
                        help='--train: leave out the config\'s EMA update (timed by default, '
                        'as the runner runs it after every iteration)')
    parser.add_argument('--no-gc-hook', action='store_true',
                        help='--train: leave Python\'s automatic garbage collector on instead '
                        'of the config\'s GarbageCollectionHook schedule (run by default, as '
                        'the runner runs it)')
    parser.add_argument('--compile-modules', nargs='+', default=None, metavar='NAME',
                        help='sub-modules the compile* modes compile (default: '
                        f'{" ".join(COMPILE_MODULES)}; with --train '
                        f'{" ".join(TRAINING_COMPILE_MODULES)})')
    parser.add_argument('--graph-modules', nargs='+', default=list(DETECTOR_GRAPH_MODULES),
                        help='sub-modules the graph* modes run as CUDA graphs '
                        f'(trackocc.utils.cuda_graph.CUDAGraphModule); {HEAD_GRAPH_MODULE} '
                        '(decoder + head) and panoptic_merge need --query-budget')
    parser.add_argument('--graph-stable-outputs', nargs='+', default=[], metavar='NAME',
                        help='graph* modes: these graphed modules return their outputs at '
                        'stable addresses (one device copy each, in the graph), so the graphs '
                        'reading them are not captured again when these capture again, e.g. '
                        'img_view_transformer occ_encoder at a new camera rig')
    parser.add_argument('--graph-rekey-warmup', type=int, default=None, metavar='N',
                        help='graph* modes: eager calls of a new signature (a new camera rig) '
                        'once a graph was captured before (CUDAGraphModule.rekey_warmup; 0: '
                        'capture at once; default: the warm-up of the first signature)')
    parser.add_argument('--graph-keep-memory', action='store_true',
                        help='graph* modes: capture without torch.cuda.graph\'s device '
                        'synchronisation and cache flush (CUDAGraphModule.keep_memory), which '
                        'every capture pays, e.g. at each new camera rig')
    parser.add_argument('--emulate-graphs', action='store_true',
                        help='graph* modes on any device: the CUDA graphs emulated '
                        '(CUDAGraphModule(emulate=True): the capture\'s ops recorded and '
                        'replayed), to check the graphs and the --ab-* switches on the CPU; '
                        'its timings say nothing about CUDA graphs')
    parser.add_argument('--graph-compile-modules', nargs='+', default=[], metavar='NAME',
                        help='graph* modes: torch.compile these sub-modules (dotted paths, '
                        'e.g. occ_encoder.upsampler; fused elementwise kernels) before the '
                        'CUDA graphs capture them; a --compile-mode without CUDA graphs of '
                        'its own; memory_bank and query_interaction compile with dynamic '
                        'shapes unless --fixed-track-rows (default: none compiled)')
    parser.add_argument('--tf32-matmul', action='store_true',
                        help='every mode but fp32 runs its float32 matmuls (the float32 '
                        'regions, e.g. the image cross-attention\'s projections) in TF32, as '
                        'cuDNN already runs float32 convolutions; fp32 stays the reference')
    parser.add_argument('--query-budget', type=int, default=None, metavar='N',
                        help='model.query_budget: the head runs on N thing query rows every '
                        'frame (fresh + live, padded); more raise an error (default: no budget)')
    parser.add_argument('--fixed-track-rows', action='store_true',
                        help='with --query-budget: the tracks keep the budget\'s row count '
                        'from frame to frame (model.fixed_track_rows: the memory bank and '
                        'query interaction on fixed shapes), in every mode')
    parser.add_argument('--fixed-rig-inputs', action='store_true',
                        help='model.fixed_rig_inputs: the camera rig\'s bev_pool ranks and '
                        'query plan as inputs at fixed addresses (one graph of the view '
                        'transformer and of the occupancy encoder for every rig), in every mode')
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
    parser.add_argument('--autocast-weights', action='store_true',
                        help='in fp16 / bf16 modes, hold the conv / linear weights that run '
                        'under autocast in that dtype (no per-frame weight casts; same '
                        'results bit for bit; autocast_weights in the JSON: layers held)')
    parser.add_argument('--channels-last', action='store_true',
                        help='inference: run the 2D image (backbone, neck, depth net) and 3D '
                        'volume (volume encoder) convolution stacks '
                        'channels-last in every mode (trackocc.utils.memory_format; checked '
                        'against the default layout first; channels_last in a mode\'s JSON: '
                        'convolutions converted)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write the results here (after every mode)')
    parser.add_argument('--profile', metavar='PREFIX',
                        help='also write torch.profiler tables of --profile-steps inference '
                        'frames, or with --train training iterations (forward, backward, '
                        'optimizer step) after the timed ones, per mode to PREFIX<mode>.txt; '
                        'on CUDA with the Python lines that synchronise during one more frame '
                        '/ iteration; its counters are the mode\'s "profile" in the JSON')
    parser.add_argument('--profile-steps', type=int, default=5, metavar='N',
                        help='frames or (--train) iterations profiled by --profile (default 5)')
    parser.add_argument('--keep-going', action='store_true',
                        help='record a failing mode in the JSON and go on with the next')
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='key=value overrides of the config')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='pytorch: --train as one rank of a torchrun data-parallel run '
                        '(tools/analysis_tools/dist_benchmark.sh); rank 0 writes the JSON')
    add_ab_arguments(parser)
    parser.add_argument('--data-root', default=None,
                        help='stream the real sequences of the config\'s test data set under '
                        'this data root (held-out mode) instead of random frames')
    parser.add_argument('--max-seqs', type=int, default=None,
                        help='held-out mode: only the first N test sequences')
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        parser.error('--frames must be >= 1 and --warmup >= 0')
    if args.profile_steps < 1:
        parser.error('--profile-steps must be >= 1')
    if args.data_root is not None and args.train:
        parser.error('--data-root streams inference frames; it cannot be used with --train')
    if args.channels_last and args.train:
        parser.error('--channels-last is an inference option (it holds the layout in an '
                     'inference-only block); it cannot be used with --train')
    if args.max_seqs is not None and (args.max_seqs < 1 or args.data_root is None):
        parser.error('--max-seqs must be >= 1 and needs --data-root')
    if args.launcher != 'none':
        if not args.train:
            parser.error('--launcher times data-parallel training only (--train); inference '
                         'modes run one process (for sharded streaming see tools/dist_test.sh)')
        if args.profile:
            parser.error('--profile cannot be used with --launcher: profile one process '
                         '(no --launcher); a profiled rank would run other iterations than '
                         'its peers, whose gradient all-reduce waits for it')
        if args.keep_going:
            parser.error('--keep-going cannot be used with --launcher: a rank that fails a '
                         'mode would leave the others waiting in the gradient all-reduce')
        if torch.device(args.device).index is not None:
            parser.error('with --launcher, --device is cuda or cpu (no index): each rank '
                         'uses cuda:LOCAL_RANK')
    if args.compile_modules is None:
        args.compile_modules = list(TRAINING_COMPILE_MODULES if args.train else COMPILE_MODULES)
    if args.graph_compile_modules and args.compile_mode in CUDAGRAPH_COMPILE_MODES:
        parser.error(f'--graph-compile-modules runs inside the graph modes\' CUDA graphs: '
                     f'--compile-mode {args.compile_mode} brings CUDA graphs of its own '
                     '(use default or max-autotune-no-cudagraphs)')
    check_ab_arguments(parser, args)
    for flag, names in (('--graph-stable-outputs', args.graph_stable_outputs),
                        ('--ab-stable-outputs', args.ab_stable_outputs)):
        outside = [n for n in names if n not in args.graph_modules]
        if outside:
            parser.error(f'{flag} {" ".join(outside)}: not in --graph-modules (only a graphed '
                         'module has outputs to keep in place)')
    for flag, on in (('--fixed-track-rows', args.fixed_track_rows),
                     ('--ab-fixed-track-rows', args.ab_fixed_track_rows)):
        if on and args.query_budget is None:
            parser.error(f'{flag} needs --query-budget (the row count the tracks keep)')
    for flag, calls in (('--graph-rekey-warmup', args.graph_rekey_warmup),
                        ('--ab-graph-rekey-warmup', args.ab_graph_rekey_warmup)):
        if calls is not None and calls < 0:
            parser.error(f'{flag} must be >= 0, got {calls}')
    if args.graph_keep_memory and args.ab_graph_keep_memory:
        parser.error('--ab-graph-keep-memory: every run keeps the memory already '
                     '(--graph-keep-memory)')
    if args.fixed_rig_inputs and args.ab_fixed_rig_inputs:
        parser.error('--ab-fixed-rig-inputs: every run fixes the rig inputs already '
                     '(--fixed-rig-inputs)')
    if args.fixed_track_rows and args.ab_fixed_track_rows:
        parser.error('--ab-fixed-track-rows: the tracks keep fixed rows in every run already '
                     '(--fixed-track-rows)')
    for names, fixed in ((args.graph_modules, args.fixed_track_rows),
                         (args.ab_graph_modules,
                          args.fixed_track_rows or args.ab_fixed_track_rows)):
        tracking = [m for m in TRACKING_GRAPH_MODULES if m in names]
        if tracking and not fixed:
            parser.error(f'--graph-modules / --ab-graph-modules {" ".join(tracking)} need '
                         'fixed track rows in the same runs (--fixed-track-rows, or '
                         '--ab-fixed-track-rows for the B runs): without them the number of '
                         'tracks, and so their shapes, change every frame')
    outside = [n for n in args.ab_ungraph_modules if n not in args.graph_modules]
    if outside:
        parser.error(f'--ab-ungraph-modules {" ".join(outside)}: not in --graph-modules')
    b_graphs = (set(args.graph_modules) - set(args.ab_ungraph_modules)) | set(args.ab_graph_modules)
    try:
        check_graph_names(set(args.graph_modules), '--graph-modules')
        check_graph_names(b_graphs, '--graph-modules / --ab-graph-modules in the B runs')
    except ValueError as err:
        parser.error(str(err))
    both = sorted(set(args.graph_stable_outputs) & set(args.ab_stable_outputs))
    if both:
        parser.error(f'--ab-stable-outputs {" ".join(both)}: already stable in every run '
                     '(--graph-stable-outputs)')
    budget_graphs = [m for m in BUDGET_GRAPH_MODULES
                     if m in args.graph_modules + args.ab_graph_modules]
    if args.query_budget is None and budget_graphs and \
            any(m.startswith('graph') for m in args.mode):
        parser.error(f'--graph-modules {" ".join(budget_graphs)} needs --query-budget '
                     '(without it the number of thing queries, and so the head\'s and the '
                     'merge\'s shapes, change every frame)')
    if args.emulate_graphs and not any(m.startswith('graph') for m in args.mode):
        parser.error('--emulate-graphs emulates the graph* modes: give one in --mode')
    return args


def check_graph_device(device: torch.device, emulate: bool = False) -> None:
    """The graph modes replay CUDA graphs: a RuntimeError on another device unless they are
    emulated (``--emulate-graphs``)."""
    if device.type != 'cuda' and not emulate:
        raise RuntimeError('benchmark: graph modes need a CUDA device (or --emulate-graphs, '
                           'which checks them on any device without timing them)')


def main(argv=None) -> Optional[dict]:
    args = parse_args(argv)
    device, backend, rank = torch.device(args.device), None, 0
    if args.launcher != 'none':  # before the logger: MMLogger quiets ranks > 0
        device, backend = init_data_parallel(torch.device(args.device).type)
        rank = torch.distributed.get_rank()
        if rank:  # other ranks print nothing but errors
            warnings.filterwarnings('ignore')
    quiet_logger()
    from mmengine.config import DictAction
    opts = None
    if args.cfg_options:
        ns = argparse.Namespace()
        DictAction(option_strings=[], dest='o')(None, ns, args.cfg_options)
        opts = ns.o
    if args.data_root is not None:
        try:
            check_data_root(args.data_root)  # before the model is built
        except FileNotFoundError as err:
            raise SystemExit(f'error: {err}') from err
    cfg = load_config(args.config, opts)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    model = build_model(cfg, args.checkpoint, str(device))
    set_query_budget(model, args.query_budget, None if args.train or args.data_root is not None
                     else args.max_live_tracks)
    if args.fixed_track_rows:
        model.fixed_track_rows = True
    model.fixed_rig_inputs = args.fixed_rig_inputs
    num_cams, img_hw = input_geometry(model)
    transforms = prepare_inference_model(model, args.fuse_conv_bn, args.channels_last)
    result = dict(config=args.config, checkpoint=args.checkpoint,
                  kind='train' if args.train else 'inference', device=str(device),
                  device_name=torch.cuda.get_device_name(device) if device.type == 'cuda'
                  else 'cpu', torch=torch.__version__, num_cams=num_cams, input_hw=list(img_hw),
                  occ_size=list(model.occ_size),
                  params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                  cudnn_benchmark=args.cudnn_benchmark, query_budget=model.query_budget,
                  fixed_track_rows=model.fixed_track_rows,
                  fixed_rig_inputs=model.fixed_rig_inputs,
                  **transforms, modes={})
    runner_model = model  # what the iterations run: the data-parallel wrapper with --launcher
    if backend is not None:
        runner_model = wrap_data_parallel(cfg, model, device)
        result.update(launcher=args.launcher, world_size=torch.distributed.get_world_size(),
                      backend=backend)
    held_out = reference_predictions = None
    sequence_ids: List = []
    if args.data_root is not None:
        try:
            held_out = load_held_out_frames(cfg, model, args.data_root, args.max_seqs)
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f'error: {err}') from err
        sequence_ids = [f.meta['sequence_id'] for f in held_out]
        result.update(data_root=args.data_root, max_seqs=args.max_seqs,
                      held_out_frames=len(held_out),
                      held_out_sequences=len(set(sequence_ids)),
                      preloaded_inputs_mib=inputs_mib(held_out))
    before_frame = None  # CUDA-graph trees of torch.compile need a step mark per frame
    variant = None  # the --ab-* modules (ModuleVariant), built by the first B run
    if ab_on(args):
        result['ab'] = ab_record(args)
    if args.graph_stable_outputs:
        result['graph_stable_outputs'] = args.graph_stable_outputs
    if args.graph_rekey_warmup is not None:
        result['graph_rekey_warmup'] = args.graph_rekey_warmup
    for label, mode, variant_on in run_plan(args):
        kind, dtype = split_mode(mode)
        t0 = time.perf_counter()
        switch = contextlib.ExitStack()  # the variant stays on until its graphs are counted
        try:
            if kind == 'compile':
                dynamic = dynamic_shape_modules(model)
                result['compiled_modules'] = compile_modules(
                    model, args.compile_modules, args.compile_mode, dynamic=dynamic)
                result['compiled_dynamic'] = [n for n in result['compiled_modules']
                                              if n in dynamic]
                result['compile_mode'] = args.compile_mode or 'default'
                if args.compile_mode in CUDAGRAPH_COMPILE_MODES:
                    before_frame = torch.compiler.cudagraph_mark_step_begin
            if kind == 'graph':
                check_graph_device(device, args.emulate_graphs)
                if args.graph_compile_modules:  # compiled first, then captured in the graphs
                    dynamic = dynamic_shape_modules(model)
                    result['graph_compiled_modules'] = compile_modules(
                        model, args.graph_compile_modules, args.compile_mode, strict=True,
                        dynamic=dynamic)
                    result['compiled_dynamic'] = [n for n in result['graph_compiled_modules']
                                                  if n in dynamic]
                result['graphed_modules'] = graph_modules(
                    model, args.graph_modules, stable_outputs=args.graph_stable_outputs,
                    rekey_warmup=args.graph_rekey_warmup, keep_memory=args.graph_keep_memory,
                    emulate=args.emulate_graphs)
                if variant_on:
                    if variant is None:  # after the A modules exist: none may be in both
                        variant = ModuleVariant(
                            model, args.ab_compile_modules, args.ab_graph_modules,
                            args.compile_mode, args.ab_stable_outputs, ab_settings(args),
                            args.ab_ungraph_modules, emulate=args.emulate_graphs)
                    switch.enter_context(variant)
            if variant_on and args.train:  # --ab-setting only (check_ab_arguments)
                if variant is None:
                    variant = ModuleVariant(model, settings=ab_settings(args))
                switch.enter_context(variant)
            held = layout = None
            if args.autocast_weights and dtype is not None and not args.train:
                held = probe_autocast_weights(
                    model, device, dtype,
                    *((held_out[0].inputs, held_out[0].clip) if held_out else ()))
            if args.channels_last:  # inside the held weights: both nest either way round
                layout = ChannelsLast(model)
            tf32 = args.tf32_matmul and mode != 'fp32'
            with held or contextlib.nullcontext(), layout or contextlib.nullcontext(), \
                    float32_matmul_precision('high' if tf32 else None):
                res = run_mode(args, cfg, runner_model, device, dtype, label, held_out,
                               before_frame, backend)
            if res is None:  # a rank > 0 of a data-parallel run: rank 0 reports
                continue
            predictions = res.pop('predictions', None)
            if predictions is not None:
                if not result['modes']:  # the first mode: the guard's reference
                    reference_predictions = predictions
                elif reference_predictions is not None:
                    res['agreement'] = prediction_agreement(reference_predictions,
                                                            predictions, sequence_ids)
            if held is not None:
                res['autocast_weights'] = held.count
            if layout is not None:
                res['channels_last'] = layout.count
            if tf32:
                res['tf32_matmul'] = True
        except Exception as exc:  # noqa: BLE001  (reported per mode with --keep-going)
            if not args.keep_going:
                raise
            res = dict(error=f'{type(exc).__name__}: {exc}'.strip()[:2000])
            traceback.print_exc()
        graphs = graph_counts(model)
        switch.close()
        if graphs and 'error' not in res:
            res['cuda_graphs'] = graphs
        res['wall_s'] = time.perf_counter() - t0
        result['modes'][label] = res
        if held_out is not None:
            result['occstq_guard'] = occstq_guard(result['modes'])
        if variant_on and args.train:
            result.setdefault('ab_summary', {})[mode] = train_ab_summary(
                result['modes'], mode, args.ab_rounds)
        if variant_on and held_out is not None:
            result.setdefault('ab_summary', {})[mode] = ab_summary(result['modes'], mode,
                                                                   args.ab_rounds)
        shown = {k: v for k, v in res.items() if not isinstance(v, list)}  # no per-frame lists
        if 'agreement' in shown:
            shown['agreement'] = {k: v for k, v in shown['agreement'].items()
                                  if not isinstance(v, list)}
        print(f'[benchmark] {label}: ' + json.dumps(shown, default=float), flush=True)
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=2, default=float))
    if backend is not None:
        close_process_group()
    return result if rank == 0 else None


if __name__ == '__main__':
    main()
