#!/usr/bin/env python
"""OccSTQ of saved predictions with oracle instance ids: how much AQ perfect association
would give the same masks (``trackocc/evaluation/functional/oracle_association.py``).

    python tools/analysis_tools/oracle_association.py PRED_DIR GT_ROOT OUT_DIR \
        [--per-voxel] [--split val] [--strict] [--json OUT]

Writes every frame of PRED_DIR with its instances relabelled to OUT_DIR (same file names,
each file atomically), scores both directories and prints OccSTQ / AQ / mIoU and per thing
class AQ side by side. The gap between the two AQs is what association (birth, death,
carrying a track) loses; what the oracle still lacks is lost in the per-frame masks.
``--per-voxel`` also splits each predicted instance along the gt instances it covers: then
only the predicted thing voxels are the model's, and the gap to the first oracle is what
masks spread over several objects lose. Semantics are not touched, so mIoU is the same in
all. numpy only.
"""
import argparse
import json
import os
import sys

from trackocc.evaluation import functional as core
from trackocc.evaluation.functional.oracle_association import OracleAssociation
from trackocc.utils.output_files import check_output_path

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('pred_dir', help='folder of <sample_idx>.npz predictions')
    parser.add_argument('gt_root', help='folder holding <split>/<seq>/<frame>_04.npz '
                                        '(or a data root holding pano_voxel04/)')
    parser.add_argument('out_dir', help='where the relabelled predictions go (a new or '
                                        'empty folder)')
    parser.add_argument('--split', default='validation', choices=sorted(core.SPLIT_ALIASES))
    parser.add_argument('--strict', action='store_true',
                        help="OccSTQ's strict settings (no reference quirks; docs/occstq.md)")
    parser.add_argument('--per-voxel', action='store_true',
                        help='also split each predicted instance along the gt instances it '
                             'covers (oracle separation + association)')
    parser.add_argument('--json', default=None, help='write both results here')
    return parser.parse_args(argv)


def relabel_frames(plan: list, out_dir: str, settings: core.OccSTQSettings,
                   per_voxel: bool = False) -> None:
    """Write the oracle-relabelled frames of ``plan`` (``core.plan_frames``) to ``out_dir``,
    one sequence after the other; overlaps count inside OccSTQ's evaluation mask only."""
    oracle, seq_now = None, None
    for seq, _, gt_path, pred_path in plan:
        if seq != seq_now:
            oracle, seq_now = OracleAssociation(per_voxel), seq
        gt = core.load_gt_frame(gt_path)
        sem, inst = core.load_pred_frame(pred_path)
        mask = core.evaluation_mask(gt['mask_camera'], gt['infov'], settings, core.GRID_SHAPE)
        core.write_pred_frame(os.path.join(out_dir, os.path.basename(pred_path)), sem,
                              oracle.relabel(inst, gt['instances'], mask))


def check_outputs(args: argparse.Namespace) -> None:
    """``ValueError`` unless OUT_DIR is a new or empty folder other than PRED_DIR and the
    ``--json`` file can be written (checked before any work)."""
    if os.path.abspath(args.out_dir) == os.path.abspath(args.pred_dir):
        raise ValueError('OUT_DIR must not be PRED_DIR (the predictions would be overwritten)')
    if os.path.isdir(args.out_dir) and os.listdir(args.out_dir):
        raise ValueError(f'OUT_DIR {args.out_dir} is not empty')
    if args.json:
        check_output_path(args.json, '--json')


def thing_classes(result: dict) -> list:
    """The classes with at least one gt tube in a summary of ``core.summarize``."""
    return [c for c, n in enumerate(result['num_tubes']) if n > 0]


def main(argv=None) -> int:
    args = parse_args(argv)
    split, settings, gt_root = core.scoring_inputs(args.split, args.gt_root, args.strict)
    try:
        check_outputs(args)
        plan = core.plan_frames(gt_root, args.pred_dir, split)  # checks before writing
        os.makedirs(args.out_dir, exist_ok=True)
        relabel_frames(plan, args.out_dir, settings, args.per_voxel)
        frames = len(plan)
        results = {name: core.evaluate_directories(gt_root, folder, split, settings)[0]
                   for name, folder in (('predicted_ids', args.pred_dir),
                                        ('oracle_ids', args.out_dir))}
    except (core.OccFileError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    names = core.OCC_CLASS_NAMES
    print(f'{frames} frames; OccSTQ / AQ / mIoU (x100), AQ of the classes with tubes')
    for name, res in results.items():
        per_class = '  '.join(f'{names[c]} {100 * res["per_class_aq"][c]:.2f}'
                              for c in thing_classes(res))
        print(f'{name:>14}: {100 * res["OccSTQ"]:6.2f} {100 * res["AQ"]:6.2f} '
              f'{100 * res["mIoU"]:6.2f}   {per_class}')
    if args.json:
        report = dict(pred_dir=os.path.abspath(args.pred_dir), gt_root=os.path.abspath(gt_root),
                      split=split, frames=frames, per_voxel=args.per_voxel)
        for name, res in results.items():
            report[name] = dict(OccSTQ=res['OccSTQ'], AQ=res['AQ'], mIoU=res['mIoU'],
                                per_class_aq={names[c]: res['per_class_aq'][c]
                                              for c in thing_classes(res)})
        core.atomic_write_text(args.json, json.dumps(report, indent=1, allow_nan=True))
    return 0


if __name__ == '__main__':
    sys.exit(main())
