"""Train a trackocc model (mmdet3d 1.x style).

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]] [--cfg-options k=v ...]
        [--compile [MODE]] [--compile-modules NAME ...]
    bash tools/dist_train.sh CONFIG GPUS [args]      # --launcher pytorch
"""
import argparse
import logging
import sys

from mmengine.config import DictAction
from mmengine.logging import print_log

from trackocc.engine.checkpoint_files import CheckpointFileError
from trackocc.engine.optim_wrappers import AMP_OPTIM_WRAPPERS
from trackocc.utils.distributed import close_process_group
from trackocc.utils.tool_setup import build_runner, load_tool_config, prepare_resume


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a trackocc model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--sync-bn', choices=['none', 'torch', 'mmcv'], default='none',
                        help='convert BN layers to SyncBN (DDP only)')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale lr by the batch size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the newest complete checkpoint of the '
                        'work dir if no CKPT is given (the checkpoint\'s seed is used unless '
                        '--seed is given)')
    parser.add_argument('--seed', type=int, default=None, help='random seed')
    parser.add_argument('--deterministic', action='store_true')
    parser.add_argument('--compile', nargs='?', const='default', default=None, metavar='MODE',
                        choices=['default', 'reduce-overhead', 'max-autotune',
                                 'max-autotune-no-cudagraphs'],
                        help='torch.compile the dense sub-networks in place for training '
                        '(CompileModulesHook; MODE: a torch.compile mode, reduce-overhead '
                        'replays them as CUDA graphs)')
    parser.add_argument('--compile-modules', nargs='+', default=None, metavar='NAME',
                        help='--compile: the sub-modules to compile (dotted paths; default: '
                        'the image backbone and neck, the depth net, the volume encoder '
                        'backbone and neck, the mask-feature upsampler)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (xxx=[a,b] for lists)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.compile_modules and args.compile is None:
        parser.error('--compile-modules needs --compile')
    return args


def build_config(args):
    cfg = load_tool_config(args)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper in AMP_OPTIM_WRAPPERS.values():
            print_log('AMP is already enabled in the config.', logger='current',
                      level=logging.WARNING)
        else:
            cfg.optim_wrapper.type = AMP_OPTIM_WRAPPERS.get(optim_wrapper, 'AmpOptimWrapper')
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.compile is not None:
        hook = dict(type='CompileModulesHook',
                    mode=None if args.compile == 'default' else args.compile)
        if args.compile_modules:
            hook['modules'] = list(args.compile_modules)
        cfg.custom_hooks = [h for h in cfg.get('custom_hooks', None) or []
                            if h.get('type') != 'CompileModulesHook'] + [hook]
    if args.sync_bn != 'none':
        cfg.sync_bn = args.sync_bn
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise RuntimeError(
                f'{args.config}: --auto-scale-lr needs auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.seed is not None or args.deterministic:
        cfg.randomness = dict(seed=args.seed, deterministic=args.deterministic)
    prepare_resume(cfg)  # a resumed run takes the seed of its checkpoint if none is given
    if args.deterministic and cfg.randomness.seed is None:
        cfg.randomness.seed = 0
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except (FileNotFoundError, CheckpointFileError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    runner = build_runner(cfg)
    runner.train()
    close_process_group()
    return 0


if __name__ == '__main__':
    sys.exit(main())
