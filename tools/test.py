"""Test (stream) a trackocc model and print the OccSTQ table (mmdet3d 1.x style).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    python tools/test.py CONFIG CHECKPOINT --format-only --out-dir PRED  # <sample_idx>.npz
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS                 # whole sequences per rank
"""
import argparse

from mmengine.config import ConfigDict, DictAction

from trackocc.utils.tool_setup import build_runner, check_checkpoint_matches, load_tool_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (stream) a trackocc model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file')
    parser.add_argument('--random-init', action='store_true',
                        help='evaluate the config\'s weight initialisation instead of a '
                             'checkpoint (the untrained baseline of a learning check)')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--format-only', action='store_true',
                        help='write predictions (pano_sem/pano_inst npz per frame) instead '
                        'of scoring')
    parser.add_argument('--out-dir', help='where --format-only writes the predictions')
    parser.add_argument('--csv', help='also write per-sequence metrics to this CSV file')
    parser.add_argument('--show-dir',
                        help='render every streamed frame (gt | prediction, BEV and 3D) '
                        'to DIR/<sequence>/<frame>.png and a GIF per sequence')
    parser.add_argument('--merge-audit', metavar='FILE',
                        help='also audit the panoptic merge: per predicted class, how many '
                        'track-frames are output, dormant, below the score threshold, empty '
                        'or lost to overlapping masks (MergeAuditHook; table in the log, '
                        'JSON to FILE)')
    parser.add_argument('--amp', action='store_true', help='run inference with AMP')
    parser.add_argument('--fast', action='store_true',
                        help='fold batch norms into convolutions and, on a GPU, replay the '
                        'encoder stages as CUDA graphs (FastInferenceHook)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (xxx=[a,b] for lists)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (not args.random_init):
        parser.error('give either a checkpoint or --random-init')
    if args.format_only and not args.out_dir:
        parser.error('--format-only needs --out-dir')
    return args


def _set_evaluator_option(cfg, **kwargs):
    evaluators = (cfg.test_evaluator if isinstance(cfg.test_evaluator, list)
                  else [cfg.test_evaluator])
    for evaluator in evaluators:
        evaluator.update(kwargs)


def build_config(args):
    cfg = load_tool_config(args)
    cfg.load_from = args.checkpoint
    if args.format_only:
        _set_evaluator_option(cfg, format_only=True, outfile_prefix=args.out_dir)
    if args.csv:
        _set_evaluator_option(cfg, csv_file=args.csv)
    if args.show_dir:
        cfg.default_hooks.visualization.update(draw=True, test_out_dir=args.show_dir)
    if args.fast:
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + \
            [dict(type='FastInferenceHook')]
    if args.merge_audit:
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + \
            [dict(type='MergeAuditHook', out_file=args.merge_audit)]
    if args.amp:
        cfg.test_cfg = ConfigDict(cfg.get('test_cfg', None) or dict(type='TestLoop'))
        cfg.test_cfg.fp16 = True
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    runner = build_runner(cfg)
    if args.random_init:
        # the Runner initialises weights only for training; seeded by cfg.randomness
        getattr(runner.model, 'module', runner.model).init_weights()
    else:
        check_checkpoint_matches(runner.model, args.checkpoint)
    runner.test()


if __name__ == '__main__':
    main()
