"""Which sub-module's low precision moves the predictions: held-out sequences streamed in
float32 (the reference), then once per variant, each compared voxel by voxel with it.

    python tools/analysis_tools/precision_scan.py CONFIG CHECKPOINT --data-root ROOT \\
        [--max-seqs N] [--dtype bf16] [--modules img_backbone occ_encoder ...] \\
        [--direction only except] [--tf32] [--score] [--device cuda] \\
        [--cfg-options k=v ...] [--json OUT.json]

Variants, all eager (no compile, no CUDA graph), in one process:
``fp32-again`` (the reference streamed once more: the floor of the comparison), ``all`` (the
whole model under autocast to ``--dtype``), ``tf32-matmul`` with ``--tf32`` (float32 with TF32
matrix products, as the fast path runs its float32 parts), and per module ``only:M`` (the
model in float32, M alone under autocast) and ``except:M`` (the model under autocast, M in
float32; :mod:`trackocc.analysis.module_precision`). Modules default to the detector's stage
modules (``trackocc.analysis.stages``) that ``all`` enters under autocast: TrackOcc's
``autocast_scope='reference'`` (the paper configs') keeps the view transformer, the tracking
and the merge in float32 under autocast, as the fast path runs them, so scanning them would
repeat ``all`` (``except``) or test a path nothing runs (``only``); the JSON lists them
(``float32_in_all``) with every module's calls under autocast (``autocast_calls``).
``--modules`` scans the named ones whatever they do; dotted names
(``pts_bbox_head.sem_head``) reach deeper. Per variant: the voxels whose class differs from
the reference's and those of the same class under another track id
(:func:`prediction_agreement`, mean and per frame), the frames that differ, occupied voxels,
whether live tracks and births equal the reference's, and with ``--score`` OccSTQ and its
difference in points (the benchmark's guard). cuDNN's convolutions keep PyTorch's default
TF32 setting in every variant.
"""
from __future__ import annotations

import argparse
import json
import statistics
from contextlib import contextmanager, nullcontext
from typing import Dict, List, Optional

import torch
from mmengine.config import DictAction

from trackocc.analysis.held_out_scoring import prediction_agreement, score_all
from trackocc.analysis.held_out_stream import (check_data_root, load_held_out_frames,
                                               stream_held_out)
from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.analysis.module_precision import (DIRECTIONS, autocast_entries, find_submodule,
                                                module_precision)
from trackocc.analysis.stages import stage_modules
from trackocc.evaluation.functional import atomic_write_text

DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
# stage modules that only run with fixed track rows (they hold query_interaction / the merge)
NOT_SCANNED = ('track_carry', 'track_settle')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='trained weights (random ones predict too little)')
    parser.add_argument('--data-root', required=True,
                        help='data root of the config\'s test data set (held-out sequences)')
    parser.add_argument('--max-seqs', type=int, default=None,
                        help='only the first N test sequences')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='bf16',
                        help='the low precision (autocast dtype)')
    parser.add_argument('--modules', nargs='+', default=None,
                        help='sub-modules to scan (default: the stage modules)')
    parser.add_argument('--direction', nargs='+', choices=DIRECTIONS, default=list(DIRECTIONS),
                        help='only: M alone in low precision; except: all but M')
    parser.add_argument('--tf32', action='store_true',
                        help='also a float32 variant with TF32 matrix products')
    parser.add_argument('--score', action='store_true',
                        help='OccSTQ of every variant (a metric pass each)')
    parser.add_argument('--cudnn-benchmark', action=argparse.BooleanOptionalAction,
                        default=True, help='cuDNN picks its fastest algorithms (default on)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--json', help='write the results here (after every variant)')
    args = parser.parse_args(argv)
    if args.max_seqs is not None and args.max_seqs < 1:
        parser.error(f'--max-seqs must be >= 1, got {args.max_seqs}')
    return args


@contextmanager
def tf32_matmul():
    """Float32 matrix products in TF32 within the block (restored after)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def scanned_modules(model, args) -> List[str]:
    """``--modules``, or the detector's stage modules; every name checked before streaming."""
    names = args.modules or [a for mods in stage_modules(model).values() for a, _ in mods
                             if a not in NOT_SCANNED]
    for name in names:
        find_submodule(model, name)
    return names


def module_plan(model, names: List[str], args, device_type: str) -> List[tuple]:
    """``(variant, autocast dtype or None, context factory yielding module calls)`` of every
    direction and module."""
    dtype = DTYPES[args.dtype]
    return [(f'{direction}:{name}', dtype if direction == 'except' else None,
             lambda n=name, d=direction: module_precision(model, [n], d, device_type, dtype))
            for direction in args.direction for name in names]


def summarise(run: Dict[str, object], reference: Dict[str, object],
              sequence_ids: List) -> Dict[str, object]:
    """A variant's comparison with the reference stream."""
    agreement = prediction_agreement(reference['predictions'], run['predictions'],
                                     sequence_ids)
    semantic, instance = agreement['semantic_diff_voxels'], agreement['instance_diff_voxels']
    return dict(mean_semantic_diff_voxels=statistics.fmean(semantic),
                max_semantic_diff_voxels=max(semantic),
                mean_instance_diff_voxels=statistics.fmean(instance),
                differing_frames=sum(s + i > 0 for s, i in zip(semantic, instance)),
                mean_occupied_voxels=run['mean_occupied_voxels'],
                live_tracks_equal=run['live_tracks'] == reference['live_tracks'],
                births_equal=run['births'] == reference['births'],
                fps=run['fps'], agreement=agreement)


def main(argv=None) -> Optional[dict]:
    args = parse_args(argv)
    quiet_logger()
    try:
        check_data_root(args.data_root)
    except FileNotFoundError as err:
        raise SystemExit(f'error: {err}') from err
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.checkpoint, str(device))
    try:
        candidates = scanned_modules(model, args)
        frames = load_held_out_frames(cfg, model, args.data_root, args.max_seqs)
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f'error: {err}') from err
    sequence_ids = [f.meta['sequence_id'] for f in frames]
    reference = stream_held_out(model, frames, device)
    result = dict(config=args.config, checkpoint=args.checkpoint, device=str(device),
                  dtype=args.dtype, data_root=args.data_root, frames=len(frames),
                  sequences=len(set(sequence_ids)),
                  reference=dict(mean_occupied_voxels=reference['mean_occupied_voxels'],
                                 fps=reference['fps']),
                  variants={})
    if args.score:
        result['reference']['occstq'] = score_all([f.gt for f in frames],
                                                  reference['predictions'])
    print(f'reference (fp32): {len(frames)} frames, {reference["mean_occupied_voxels"]:.0f} '
          'occupied voxels a frame')
    print(f'{"variant":40s} {"class diff":>10s} {"id diff":>9s} {"frames":>7s} {"tracks":>6s}'
          + ('  OccSTQ diff' if args.score else ''))

    def run_variant(name: str, dtype, context) -> Dict[str, object]:
        with context() as calls:
            run = stream_held_out(model, frames, device, dtype)
        row = summarise(run, reference, sequence_ids)
        if args.score:
            row['occstq'] = score_all([f.gt for f in frames], run['predictions'])
            row['occstq_diff_points'] = 100 * (row['occstq']['reference']['OccSTQ'] -
                                               result['reference']['occstq']['reference']
                                               ['OccSTQ'])
        result['variants'][name] = row
        same = 'same' if row['live_tracks_equal'] and row['births_equal'] else 'differ'
        print(f'{name:40s} {row["mean_semantic_diff_voxels"]:10.1f} '
              f'{row["mean_instance_diff_voxels"]:9.1f} {row["differing_frames"]:7d} '
              f'{same:>6s}' + (f'  {row["occstq_diff_points"]:+.3f}' if args.score else ''))
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=2, default=float))
        return calls

    low = DTYPES[args.dtype]
    run_variant('fp32-again', None, nullcontext)
    # the whole model under autocast, as the fast path runs it: which modules it enters there
    entries = run_variant('all', low, lambda: autocast_entries(model, candidates, device.type))
    result['autocast_calls'] = dict(entries)
    if args.tf32:
        run_variant('tf32-matmul', None, tf32_matmul)
    # by default only the modules a low-precision run enters under autocast: the others run
    # in float32 there already (except:M would repeat `all`, only:M test another path)
    names = args.modules or [n for n in candidates if entries[n]]
    result['float32_in_all'] = [n for n in candidates if not entries[n]]
    if result['float32_in_all']:
        print(f'float32 under autocast already (not scanned unless named in --modules): '
              f'{" ".join(result["float32_in_all"])}')
    for name, dtype, context in module_plan(model, names, args, device.type):
        calls = run_variant(name, dtype, context)
        result['variants'][name]['module_calls'] = dict(calls)
        if not any(calls.values()):
            raise SystemExit(f'error: {name}: the module never ran in the stream, so the '
                             'variant would only repeat another')
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=float))
    return result


if __name__ == '__main__':
    main()
