"""Command-line selection of occupancy frames for the viewers (``tools/visualize_occupancy.py``,
``tools/record_rerun.py``): the options, their checks and the frames they select. Light (no
torch): the tools' ``--help`` stays fast."""
import argparse
import os.path as osp
from typing import Dict, Optional

from trackocc import structures as occ


def add_frame_selection_args(parser: argparse.ArgumentParser, verb: str = 'show') -> None:
    """``--data-root --gt-root --pred-dir --split --sequences --max-frames --load-interval
    --no-gt``."""
    parser.add_argument('--data-root', default=None,
                        help='data set root (pano_voxel04/ and kitti_format/ below it)')
    parser.add_argument('--gt-root', default=None,
                        help='folder holding <split>/<seq>/<frame>_04.npz (default: '
                             '<data-root>/pano_voxel04)')
    parser.add_argument('--pred-dir', default=None, help='folder of <sample_idx>.npz predictions')
    parser.add_argument('--split', default='validation', choices=list(occ.SPLITS))
    parser.add_argument('--sequences', type=int, nargs='+', default=None,
                        help='sequence numbers (default: every sequence found)')
    parser.add_argument('--max-frames', type=int, default=None,
                        help=f'{verb} at most this many frames per sequence')
    parser.add_argument('--load-interval', type=int, default=1,
                        help='only frames with frame %% N == 0 (released data: 5)')
    parser.add_argument('--no-gt', action='store_true', help=f'{verb} predictions only')


def check_frame_selection(args: argparse.Namespace) -> Optional[str]:
    """Fill ``args.gt_root`` from ``--data-root``; the problem with the options, if any."""
    if args.gt_root is None and args.data_root is not None:
        args.gt_root = osp.join(args.data_root, occ.OCC_DIR)
    if args.no_gt and not args.pred_dir:
        return '--no-gt needs --pred-dir'
    if not args.gt_root and not args.pred_dir:
        return 'give --data-root/--gt-root and/or --pred-dir'
    if args.load_interval < 1 or (args.max_frames is not None and args.max_frames < 1):
        return '--load-interval and --max-frames must be >= 1'
    return None


def selected_frames(args: argparse.Namespace, pred_without_gt: bool = False
                    ) -> Dict[int, Dict[int, Dict[str, Optional[str]]]]:
    """:func:`trackocc.structures.sequence_frame_files` of the options."""
    use_gt = args.gt_root and not args.no_gt
    return occ.sequence_frame_files(
        args.split, gt_root=args.gt_root if use_gt else None, pred_dir=args.pred_dir,
        sequences=args.sequences, load_interval=args.load_interval, max_frames=args.max_frames,
        pred_without_gt=pred_without_gt)
