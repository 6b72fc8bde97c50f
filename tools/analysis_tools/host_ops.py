"""Ops a streamed TrackOcc frame dispatches outside its stage modules, by source line.

    python tools/analysis_tools/host_ops.py CONFIG [CHECKPOINT] [--query-budget N]
        [--fixed-track-rows] [--fixed-rig-inputs] [--frames 3] [--max-live-tracks 64]
        [--top 30] [--device cpu] [--cfg-options k=v ...] [--json OUT.json]

Streams ``--frames`` synthetic frames (batch 1, the config's cameras and input size; live
tracks capped at ``--max-live-tracks`` as ``benchmark.py`` does), then counts the next frame's
ATen ops (``trackocc.analysis.host_ops.HostOpCounter``): inside a call of a stage module
(image backbone and neck, view transformer, volume encoder, occupancy encoder, head,
tracking, ``track_carry`` / ``track_settle``: what the fast path can replay as CUDA graphs or
compile) or outside them (the host's glue: the tracker's update, reference-point alignment,
query padding, bookkeeping), the latter by source line and op. On a host-bound GPU frame each
op outside costs a launch and its Python: the count, which is the same on every machine,
says what the fast path leaves to the host. ``--fixed-track-rows`` (with a query budget)
moves the tracking's glue into ``track_carry`` / ``track_settle``.
"""
from __future__ import annotations

import argparse
import json

import torch
from mmengine.config import DictAction

from trackocc.analysis.host_ops import HostOpCounter
from trackocc.analysis.model_setup import (build_model, load_config, quiet_logger,
                                           set_query_budget)
from trackocc.analysis.streaming import cap_live_tracks, move_to_frame, synthetic_stream
from trackocc.evaluation.functional import atomic_write_text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Ops of a frame outside its stage modules')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='weights (default: random)')
    parser.add_argument('--query-budget', type=int, default=None, metavar='N',
                        help='model.query_budget: the head\'s thing query rows, padded')
    parser.add_argument('--fixed-track-rows', action='store_true',
                        help='model.fixed_track_rows (needs a query budget): the tracking on '
                        'the budget\'s rows, its glue inside track_carry / track_settle')
    parser.add_argument('--fixed-rig-inputs', action='store_true',
                        help='model.fixed_rig_inputs: the rig\'s ranks and query plan as inputs')
    parser.add_argument('--frames', type=int, default=3,
                        help='frames streamed before the counted one (default 3)')
    parser.add_argument('--max-live-tracks', type=int, default=64,
                        help='live tracks kept between frames (random weights; 0: no cap)')
    parser.add_argument('--top', type=int, default=30, help='source lines and ops listed')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--json', help='write the counts here')
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f'--frames must be >= 1, got {args.frames}')
    if args.fixed_track_rows and args.query_budget is None:
        parser.error('--fixed-track-rows needs --query-budget')
    return args


def count_host_ops(model, frames: int, max_live_tracks: int, top: int) -> dict:
    """Stream ``frames`` synthetic frames, then count the next one (see the module doc)."""
    model.eval()
    inputs, clip, frame = synthetic_stream(model)
    model.reset_tracks()
    with torch.no_grad():
        for index in range(frames):
            move_to_frame(frame, index)
            model.predict(inputs, [clip])
            cap_live_tracks(model, max_live_tracks)
        move_to_frame(frame, frames)
        with HostOpCounter(model) as counter:
            model.predict(inputs, [clip])
    return dict(counted_frame=frames, live_tracks=cap_live_tracks(model, 0),
                **counter.summary(top))


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet_logger()
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.checkpoint, args.device)
    set_query_budget(model, args.query_budget, args.max_live_tracks)
    model.fixed_track_rows = args.fixed_track_rows
    model.fixed_rig_inputs = args.fixed_rig_inputs
    result = dict(config=args.config, checkpoint=args.checkpoint, device=args.device,
                  query_budget=model.query_budget, fixed_track_rows=model.fixed_track_rows,
                  fixed_rig_inputs=model.fixed_rig_inputs,
                  **count_host_ops(model, args.frames, args.max_live_tracks, args.top))
    print(f"ops outside the stage modules: {result['outside']} of "
          f"{result['outside'] + result['inside']} ({100 * result['outside_share']:.1f} %)")
    for line, num in result['lines'].items():
        print(f'{num:6d}  {line}')
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
