#!/usr/bin/env python
"""Track diagnostics of saved predictions: gt tubes vs predicted tracks, per sequence and class.

    python tools/analysis_tools/track_diagnostics.py PRED_DIR GT_ROOT [--json OUT] \
        [--split val] [--strict] [--iou-thr 0.5]

PRED_DIR holds ``<sample_idx>.npz`` (``tools/test.py --format-only --out-dir PRED_DIR``);
GT_ROOT holds ``<split>/<seq:03d>/<frame:03d>_04.npz`` (the ``pano_voxel04`` folder; a data
root holding ``pano_voxel04/`` is accepted too). Prints per sequence and class: gt tubes,
predicted tracks, matched / missed tubes, mostly tracked / lost, ID switches,
fragmentations, false-positive tracks, track births / deaths per frame, lifetimes, coverage
of each tube by its majority track and AQ (``trackocc/evaluation/functional/
track_diagnostics.py`` defines them). ``--json`` also keeps one record per tube and track and
the per-frame counts.

Needs numpy and the numpy core ``trackocc.evaluation.functional`` (as
tools/evaluate_predictions.py).
"""
import argparse
import json
import os
import sys

from trackocc.evaluation import functional as core
from trackocc.utils.output_files import check_output_path
from trackocc.evaluation.functional import track_diagnostics as diagnostics


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('pred_dir', help='folder of <sample_idx>.npz predictions')
    parser.add_argument('gt_root', help='folder holding <split>/<seq>/<frame>_04.npz')
    parser.add_argument('--split', default='validation', choices=sorted(core.SPLIT_ALIASES))
    parser.add_argument('--json', default=None, help='write the full report here')
    parser.add_argument('--strict', action='store_true',
                        help="OccSTQ's strict settings (no reference quirks; docs/occstq.md)")
    parser.add_argument('--iou-thr', type=float, default=0.5,
                        help='a gt and a predicted instance match in a frame when their IoU '
                             'is above this (default 0.5: one to one)')
    parser.add_argument('--missing-pred', default='error', choices=['error', 'empty', 'skip'],
                        help='gt frames without a prediction: error, all-free prediction, or '
                             'left out (as tools/evaluate_predictions.py)')
    parser.add_argument('--load-interval', type=int, default=1,
                        help='only gt frames with frame %% N == 0 need a prediction')
    parser.add_argument('--quiet', action='store_true', help='do not print the table')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    split, settings, gt_root = core.scoring_inputs(args.split, args.gt_root, args.strict)
    try:
        if args.json:
            check_output_path(args.json, '--json')
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    try:
        report = diagnostics.diagnose_directories(
            gt_root, args.pred_dir, split, settings, iou_thr=args.iou_thr,
            missing_pred=args.missing_pred, load_interval=args.load_interval)
    except (core.OccFileError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    report.update(pred_dir=os.path.abspath(args.pred_dir), gt_root=os.path.abspath(gt_root))
    if not args.quiet:
        print(diagnostics.format_report(report))
    if args.json:
        try:
            core.atomic_write_text(args.json, json.dumps(report, indent=1, allow_nan=True))
        except OSError as err:
            print(f'error: cannot write {args.json}: {err}', file=sys.stderr)
            return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
