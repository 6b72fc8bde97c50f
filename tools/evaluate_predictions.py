#!/usr/bin/env python
"""Score saved 4D panoptic occupancy predictions with OccSTQ, offline.

    python tools/evaluate_predictions.py --gt-root data/TrackOcc-waymo/pano_voxel04 \
        --pred-dir work_dirs/preds --split validation --json results.json

Ground truth: <gt-root>/<split>/<seq:03d>/<frame:03d>_04.npz; predictions:
<pred-dir>/<sample_idx>.npz with pano_sem (uint8) and pano_inst (int16), flat (640000,)
(what ``OccSTQMetric(format_only=True)`` and the original's ``format_results`` write).
Frames are streamed one at a time. By default the numbers equal the original TrackOcc
evaluator's; ``--strict`` turns its quirks off (docs/occstq.md).

Only numpy is imported: ``trackocc`` and ``trackocc.evaluation`` import nothing up front, and
the OccSTQ core ``trackocc.evaluation.functional`` needs numpy alone (no torch / mmdet3d).
"""
import argparse
import json
import sys
import time

from trackocc.evaluation import functional as core
from trackocc.utils.output_files import check_output_path


def limit_malloc_arenas() -> None:
    """glibc gives each reader thread its own malloc arena and trims it after every frame,
    so the next frame's multi-MB buffers page-fault again (about 0.3 s of system time per 64
    frames); one shared arena avoids that. No-op where glibc's ``mallopt`` is absent."""
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        libc.mallopt(-8, 1)  # M_ARENA_MAX = 1, before any reader thread starts
    except (OSError, AttributeError):
        pass


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--gt-root', required=True,
                        help='folder holding <split>/<seq>/<frame>_04.npz')
    parser.add_argument('--pred-dir', required=True, help='folder of <sample_idx>.npz predictions')
    parser.add_argument('--split', default='validation', choices=['training', 'validation'])
    parser.add_argument('--json', default=None, help='write the results here (NaN as NaN)')
    parser.add_argument('--csv', default=None, help='write per-sequence results here')
    parser.add_argument('--strict', action='store_true',
                        help="turn off the original evaluator's quirks (docs/occstq.md)")
    parser.add_argument('--missing-pred', default='error', choices=['error', 'empty', 'skip'],
                        help='gt frames without a prediction: error (default), score them as '
                             'an empty prediction (all free, no instance), or skip them (the '
                             'original scores only the frames it has predictions for)')
    parser.add_argument('--load-interval', type=int, default=1,
                        help='only gt frames with frame %% N == 0 need a prediction '
                             '(the original evaluates every 5th frame: 5)')
    parser.add_argument('--io-workers', type=int, default=2,
                        help='threads reading frames ahead (0 = read in the main thread)')
    parser.add_argument('--quiet', action='store_true', help='do not print the table')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        for what in ('json', 'csv'):
            if getattr(args, what):
                check_output_path(getattr(args, what), f'--{what}')
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.io_workers > 0:
        limit_malloc_arenas()
    settings = core.OccSTQSettings.strict() if args.strict else core.OccSTQSettings()
    try:
        result, stats = core.evaluate_directories(
            args.gt_root, args.pred_dir, args.split, settings,
            missing_pred=args.missing_pred, load_interval=args.load_interval,
            io_workers=args.io_workers)
    except (core.OccFileError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    result['class_names'] = list(settings.class_names)
    if not args.quiet:
        print(core.format_table(result, settings=settings))
        print(f'({time.perf_counter() - start:.2f} s)')
    try:
        if args.json:
            core.atomic_write_text(args.json, json.dumps(result, indent=1, allow_nan=True))
        if args.csv:
            core.write_sequence_csv(args.csv, core.sequence_rows(stats, settings))
    except OSError as err:
        print(f'error: cannot write the results: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
