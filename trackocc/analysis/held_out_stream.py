"""Real held-out sequences streamed through ``TrackOcc.predict`` for a benchmark: every frame
of the config's test data set loaded, preprocessed and moved to the device once, then streamed
in order (the tracker reset at each sequence start), with per-frame live tracks, occupied
voxels and track births, and the predictions kept on the host for OccSTQ."""
import copy
import os.path as osp
import statistics
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set

import torch

from ..utils.compile_modules import compiled_graphs
from ..utils.cuda_graph import graph_counts, graph_steady
from .memory import peak_memory_stats, release_cached_memory, reset_peak_memory
from .precision import autocast
from .stages import StageTimer, mean_stage_ms
from .timing import DeviceClock, latency_summary


@dataclass
class HeldOutFrame:
    """One preloaded frame: ``inputs`` (``imgs`` (1, 1, N, 3, H, W) on the device), ``clip``
    (the one-frame ``TrackDataSample`` ``predict`` fills, on the device, without ground truth)
    and ``gt`` (a CPU ``OccDataSample`` with the frame's meta and ``gt_occ``, for OccSTQ)."""
    inputs: dict
    clip: object
    gt: object

    @property
    def meta(self) -> dict:
        return self.clip.video_data_samples[0].metainfo


def check_data_root(data_root: str) -> None:
    """``FileNotFoundError`` naming ``data_root`` if it is not a folder."""
    if not osp.isdir(data_root):
        raise FileNotFoundError(f'held-out benchmark: --data-root {data_root} is not a '
                                'directory (expected a TrackOcc-Waymo style data root, e.g. '
                                'data/TrackOcc-waymo/)')


def build_test_dataset(cfg, data_root: str):
    """The config's test data set (``test_dataloader.dataset``, its test pipeline) with
    ``data_root`` replaced; errors name ``data_root``."""
    from trackocc.registry import DATASETS
    check_data_root(data_root)
    ds_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    ds_cfg['data_root'] = data_root.rstrip('/') + '/'
    try:
        dataset = DATASETS.build(ds_cfg)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise type(err)(f'held-out benchmark: cannot build the test data set of --data-root '
                        f'{data_root}: {err}') from err
    if not getattr(dataset, 'test_mode', False) or not hasattr(dataset, 'item_sequence_ids'):
        raise ValueError('held-out benchmark: the config\'s test data set must be a '
                         'sequence data set in test mode (one frame per item, stream order)')
    return dataset


def sequence_items(dataset, max_seqs: Optional[int] = None) -> List[int]:
    """Item indices of the data set's first ``max_seqs`` sequences (all if None), in order."""
    seq_ids = [int(s) for s in dataset.item_sequence_ids]
    if not seq_ids:
        raise ValueError('held-out benchmark: the test data set has no frame')
    items, seen = [], []
    for idx, seq in enumerate(seq_ids):
        if not seen or seen[-1] != seq:
            if max_seqs is not None and len(seen) == max_seqs:
                break
            seen.append(seq)
        items.append(idx)
    return items


def load_held_out_frames(cfg, model, data_root: str,
                         max_seqs: Optional[int] = None) -> List[HeldOutFrame]:
    """Load, preprocess (``model.data_preprocessor``) and move to the model's device every
    frame of the first ``max_seqs`` test sequences under ``data_root``, in stream order. The
    ground truth stays on the host (it is not needed by ``predict``)."""
    from mmengine.dataset import pseudo_collate
    dataset = build_test_dataset(cfg, data_root)
    frames = []
    for idx in sequence_items(dataset, max_seqs):
        packed = dataset[idx]
        clip = packed['data_samples']
        if len(clip.video_data_samples) != 1:
            raise ValueError(f'held-out benchmark: test item {idx} of {data_root} holds '
                             f'{len(clip.video_data_samples)} frames, expected 1 (test mode)')
        frame = clip.video_data_samples[0]
        if 'gt_occ' not in frame:
            raise KeyError(f'held-out benchmark: test item {idx} of {data_root} has no gt_occ '
                           '(the test pipeline must load and pack the occupancy)')
        gt = frame.clone()
        del frame.gt_occ
        with torch.no_grad():
            data = model.data_preprocessor(pseudo_collate([packed]), False)
        frames.append(HeldOutFrame(data['inputs'], data['data_samples'][0], gt))
    return frames


def inputs_mib(frames: List[HeldOutFrame]) -> float:
    """Device memory held by the preloaded inputs (MiB)."""
    return sum(v.numel() * v.element_size() for f in frames for v in f.inputs.values()
               if torch.is_tensor(v)) / 2**20


def live_track_ids(model) -> List[int]:
    """Ids of the live tracks the last frame ended with (``obj_idxes >= 0`` of the model's
    streaming state, see :class:`trackocc.models.trackers.StreamState`)."""
    state = model.stream_state
    if state is None:
        raise RuntimeError('live_track_ids: no frame streamed since reset_tracks')
    tracks = state['pending'] if 'pending' in state else state['tracks']
    ids = tracks.obj_idxes
    return [int(i) for i in ids[ids >= 0].tolist()]


def stream_held_out(model, frames: List[HeldOutFrame], device: torch.device, dtype=None,
                    warmup: int = 0,
                    before_frame: Optional[Callable[[], None]] = None) -> Dict[str, object]:
    """Stream ``frames`` through ``predict`` and time every frame.

    Warm-up: the first ``warmup`` frames (cycling if there are fewer frames) are streamed
    untimed, then the tracks are reset and every frame is streamed once more from the
    beginning, all of them timed; the scored pass so predicts each frame exactly once, in
    stream order, as the test loop does. The tracks are reset at every sequence start (also
    detected by ``predict`` itself from ``start_of_sequence`` / ``sequence_id``). No live-track
    cap. Returns the statistics, per-frame lists (``frame_ms``, ``live_tracks``,
    ``occupied_voxels``, ``births``, ``graph_steady``: no CUDA-graphed module captured or run
    eagerly (one the frame does not call, e.g. graphed tracking at a sequence start, does not
    count), and nothing compiled by ``torch.compile`` during the frame), ``start_up`` (the
    frames that are not steady: count, mean time, share of the run's time),
    ``sequence_starts`` (count and mean time of each sequence's first frame, where a new
    camera rig's inputs are computed; steady with fixed rig inputs, yet dearer)
    with ``steady_state`` (``frames``, ``fps``, ``latency``, ``stage_ms`` over the steady frames
    only: what a long sequence approaches once the graphs of its camera rig exist and its
    compiled modules have seen their input sizes; the same as the whole stream without graphed
    or compiled modules, None when no frame is steady) and, under
    ``'predictions'``, the (semantics, instances) CPU tensors of every frame, each (X, Y, Z).
    """
    if not frames:
        raise ValueError('stream_held_out: no frame')
    model.eval()
    free = model.num_classes - 1
    clock = DeviceClock(device)
    timer = StageTimer(model, clock)

    def run(frame: HeldOutFrame) -> None:
        if frame.meta.get('start_of_sequence', False):
            model.reset_tracks()
        with torch.no_grad(), autocast(device, dtype):
            if before_frame is not None:
                before_frame()
            model.predict(frame.inputs, [frame.clip])

    release_cached_memory(device)
    totals, stages, live, occupied, births, preds, steady = [], [], [], [], [], [], []
    try:
        model.reset_tracks()
        for i in range(warmup):
            frame = frames[i % len(frames)]
            run(frame)
            del frame.clip.video_data_samples[0].pred_occ  # no stale prediction held
        model.reset_tracks()
        reset_peak_memory(device)  # cuDNN autotuning workspaces of the warm-up not counted
        seen: Set[int] = set()
        for frame in frames:
            timer.reset()
            graphs_before, compiles_before = graph_counts(model), compiled_graphs()
            start = clock.mark()
            run(frame)
            end = clock.mark()
            per_stage = timer.collect()  # synchronises
            totals.append(clock.ms(start, end))
            steady.append(graph_steady(graphs_before, graph_counts(model))
                          and compiled_graphs() == compiles_before)
            stages.append(per_stage)
            # host-side bookkeeping, not timed
            if frame.meta.get('start_of_sequence', False):
                seen = set()
            ids = live_track_ids(model)
            live.append(len(ids))
            births.append(len(set(ids) - seen))
            seen.update(ids)
            sample = frame.clip.video_data_samples[0]
            pred = sample.pred_occ
            occupied.append(int((pred.semantics != free).sum()))
            preds.append((pred.semantics.cpu(), pred.instances.cpu()))
            del sample.pred_occ
    finally:
        timer.remove()
    mean_total = statistics.fmean(totals)
    steady_ms = [t for t, ok in zip(totals, steady) if ok]
    start_up_ms = [t for t, ok in zip(totals, steady) if not ok]
    first_ms = [t for t, frame in zip(totals, frames) if frame.meta.get('start_of_sequence')]
    steady_state = None if not steady_ms else dict(
        frames=len(steady_ms), fps=1000.0 / statistics.fmean(steady_ms),
        latency=latency_summary(steady_ms),
        stage_ms=mean_stage_ms([d for d, ok in zip(stages, steady) if ok], steady_ms))
    return dict(frames=len(frames), warmup=warmup, fps=1000.0 / mean_total,
                latency=latency_summary(totals), stage_ms=mean_stage_ms(stages, totals),
                frame_ms=totals,
                live_tracks=live, occupied_voxels=occupied, births=births,
                mean_live_tracks=statistics.fmean(live),
                mean_occupied_voxels=statistics.fmean(occupied),
                mean_births=statistics.fmean(births), graph_steady=steady,
                steady_state=steady_state,
                start_up=dict(frames=len(start_up_ms),
                              mean_ms=statistics.fmean(start_up_ms) if start_up_ms else None,
                              share=sum(start_up_ms) / sum(totals)),
                sequence_starts=dict(frames=len(first_ms), mean_ms=statistics.fmean(first_ms)
                                     if first_ms else None),
                **peak_memory_stats(device), predictions=preds)
