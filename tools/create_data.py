"""Data preparation for trackocc.

Subcommands:
  synthetic  write a procedural data set in the TrackOcc-Waymo layout
  check      validate a data root (released TrackOcc-Waymo or synthetic); exit 1 on problems

Examples:
  python tools/create_data.py synthetic --out-dir data/synthetic-waymo --train-seqs 2 \
      --val-seqs 1 --frames-per-seq 6 --seed 0 --image-size 480 320 --workers 2
  python tools/create_data.py check --data-root data/synthetic-waymo
  python tools/create_data.py check --data-root data/TrackOcc-waymo --load-interval 5
"""
import argparse
import sys
import time

MIN_IMAGE_SIDE = 8  # the generator's lower limit (trackocc.datasets.synthetic)


def _positive(value):
    v = int(value)
    if v <= 0:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {value}')
    return v


def _count(value):
    v = int(value)
    if not 0 <= v < 1000:
        raise argparse.ArgumentTypeError(f'expected an integer in [0, 1000), got {value}')
    return v


def _frames(value):
    v = int(value)
    if not 0 < v < 1000:
        raise argparse.ArgumentTypeError(f'expected an integer in [1, 1000), got {value}')
    return v


def _seed(value):
    v = int(value)
    if v < 0:
        raise argparse.ArgumentTypeError(f'expected a non-negative integer, got {value}')
    return v


def _pixels(value):
    v = int(value)
    if v < MIN_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f'expected at least {MIN_IMAGE_SIDE} pixels, got {value}')
    return v


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    syn = sub.add_parser('synthetic', help='generate the synthetic TrackOcc-Waymo data set')
    syn.add_argument('--out-dir', required=True, help='output data root')
    syn.add_argument('--train-seqs', type=_count, default=2)
    syn.add_argument('--val-seqs', type=_count, default=1)
    syn.add_argument('--frames-per-seq', type=_frames, default=6,
                     help='frames per sequence, 0.5 s apart (use load_interval=1)')
    syn.add_argument('--seed', type=_seed, default=0, help='non-negative random seed')
    syn.add_argument('--image-size', type=_pixels, nargs=2, default=(480, 320),
                     metavar=('W', 'H'), help='camera image size (Waymo: 1920 1280)')
    syn.add_argument('--side-height', type=_pixels, default=None,
                     help='shorter side-camera images (Waymo: 886 for 1280 high fronts)')
    syn.add_argument('--workers', type=_positive, default=1,
                     help='processes generating sequences in parallel')
    syn.add_argument('--overwrite', action='store_true', help='replace an existing out-dir')
    syn.add_argument('--no-progress', action='store_true')

    chk = sub.add_parser('check', help='validate a data root')
    chk.add_argument('--data-root', required=True)
    chk.add_argument('--load-interval', type=_positive, default=1,
                     help='only frames with frame %% N == 0 need files (released data: 5)')
    chk.add_argument('--every', type=_positive, default=1,
                     help='check the files of one kept frame in N')
    chk.add_argument('--fast', action='store_true',
                     help='check JPEG headers and end markers instead of decoding')
    chk.add_argument('--no-projection', action='store_true',
                     help='skip the check that visible voxels project into the images')
    chk.add_argument('--no-progress', action='store_true')
    chk.add_argument('--show-warnings', action='store_true')
    return parser


def run_synthetic(args):
    from trackocc.datasets.synthetic import generate_synthetic_dataset
    start = time.perf_counter()
    try:
        result = generate_synthetic_dataset(
            args.out_dir, train_seqs=args.train_seqs, val_seqs=args.val_seqs,
            frames_per_seq=args.frames_per_seq, seed=args.seed, image_size=args.image_size,
            workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress,
            side_height=args.side_height)
    except (ValueError, OSError) as e:  # bad arguments, existing or unwritable out-dir
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {result["num_frames"]} frames to {result["out_dir"]} in '
          f'{time.perf_counter() - start:.1f} s')
    return 0


def run_check(args):
    from trackocc.datasets.data_checker import check_data_root
    report = check_data_root(args.data_root, load_interval=args.load_interval,
                             decode_images=not args.fast, every=args.every,
                             check_projection=not args.no_projection,
                             progress=not args.no_progress)
    for p in report.problems:
        print(f'PROBLEM {p}')
    if args.show_warnings:
        for w in report.warnings:
            print(f'WARNING {w}')
    print(f'checked {report.num_frames} frames of {report.num_sequences} sequences in '
          f'{args.data_root}: {len(report.problems)} problems, {len(report.warnings)} warnings')
    return 0 if report.ok else 1


def main(argv=None):
    args = build_parser().parse_args(argv)
    return {'synthetic': run_synthetic, 'check': run_check}[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
