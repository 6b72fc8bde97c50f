"""Test (stream) a trackocc model and print the OccSTQ table (mmdet3d 1.x style).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    python tools/test.py CONFIG CHECKPOINT --format-only --out-dir PRED  # <sample_idx>.npz
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS                 # whole sequences per rank
    python tools/test.py CONFIG CHECKPOINT --fast [--query-budget N] [--amp --autocast-weights]
        [--channels-last] [--compile-modules NAME ...] [--tf32-matmul]
        [--graph-stable-outputs NAME ...] [--fixed-track-rows] [--graph-rekey-warmup N]
        [--no-float32-queries] [--float32-masks] [--no-fixed-rig-inputs]

``--fast`` tests a copy of the model with the batch norms folded and, on a GPU, the encoders
as CUDA graphs (``FastInferenceHook``); ``--query-budget N`` fixes the head's thing query rows
to N (fresh queries + live tracks, padded), so that the decoder / head and the merge are CUDA
graphs too;
``--autocast-weights`` holds the weights in the test loop's autocast dtype (fp16 test loops:
the config's ``test_cfg.fp16`` or ``--amp``); ``--channels-last`` runs the image and volume
convolution stacks channels-last (same results up to float rounding); ``--compile-modules``
``torch.compile`` s the named sub-modules before the graphs capture them (docs/benchmark.md gives
the list measured fastest); ``--tf32-matmul`` runs float32 matmuls in TF32;
``--graph-stable-outputs`` names the graphs whose outputs stay at one address, so that a new
camera rig makes only the rig-dependent graphs capture again (default: the rig-dependent ones,
``img_view_transformer occ_encoder``; ``none``: no stable outputs); ``--fixed-track-rows`` keeps
the tracks at the query budget's row count (the tracking on fixed shapes);
``--graph-rekey-warmup N`` gives the graphs N eager calls at a new camera rig (default 0:
captured at the rig's first frame; 2 as at the first rig); ``--no-float32-queries`` runs the
head's decoder queries under the test loop's autocast too (by default they run in float32, only
the voxel-sized mask logits in the autocast dtype); ``--no-fixed-rig-inputs`` captures the
rig-dependent graphs again at each new camera rig (by default what depends only on the rig,
bev_pool ranks and camera-query plan, goes to them as inputs at fixed addresses, so that one
graph serves every rig).
"""
import argparse

from mmengine.config import ConfigDict, DictAction

from trackocc.utils.distributed import close_process_group
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
                        'encoder stages (with --query-budget also the decoder / head and the '
                        'merge) as CUDA '
                        'graphs (FastInferenceHook)')
    parser.add_argument('--query-budget', type=int, metavar='N',
                        help='with --fast: the head runs on exactly N thing query rows every '
                        'frame (the fresh queries + the live tracks, padded) and, on a GPU, '
                        'as a CUDA graph (the merge too); a frame with more queries stops the '
                        'test with an error (no track is dropped)')
    parser.add_argument('--autocast-weights', action='store_true',
                        help='with --fast and a test loop under autocast (--amp or the '
                        'config\'s test_cfg.fp16): hold the convolution / linear weights in '
                        'the autocast dtype (no per-frame weight casts, same results)')
    parser.add_argument('--channels-last', action='store_true',
                        help='with --fast: run the image (backbone, neck, depth net) and volume '
                        '(volume encoder) convolution stacks channels-last '
                        '(trackocc.utils.memory_format; same results up to float rounding)')
    parser.add_argument('--compile-modules', nargs='+', default=[], metavar='NAME',
                        help='with --fast: torch.compile these sub-modules of the tested copy '
                        '(dotted paths, e.g. occ_encoder.upsampler) before the CUDA graphs '
                        'capture them')
    parser.add_argument('--tf32-matmul', action='store_true',
                        help='with --fast: float32 matmuls in TF32 while testing')
    parser.add_argument('--graph-stable-outputs', nargs='+', default=None, metavar='NAME',
                        help='with --fast: these graphed sub-networks keep their outputs at '
                        'one address, so the graphs after them are not captured again at '
                        'each new camera rig (default: the rig-dependent ones, '
                        'img_view_transformer occ_encoder; "none": no stable outputs)')
    parser.add_argument('--fixed-track-rows', action='store_true',
                        help='with --fast and a query budget (--query-budget or the config\'s '
                        'model.query_budget): the tracks keep the budget\'s row count (the '
                        'tracking on fixed shapes, same results)')
    parser.add_argument('--graph-rekey-warmup', type=int, default=None, metavar='N',
                        help='with --fast: eager calls of a CUDA graph at a new camera rig '
                        'once it captured before (default 0: capture at the rig\'s first '
                        'frame; 2: as at the first rig)')
    parser.add_argument('--no-float32-queries', dest='float32_queries', action='store_false',
                        help='with --fast under autocast: the head\'s decoder and per-query '
                        'branches under autocast too (default: in float32, only the mask '
                        'logits in the autocast dtype)')
    parser.add_argument('--float32-masks', action='store_true',
                        help='with --fast under autocast: the head\'s mask logits accumulated '
                        'and kept in float32 (the merge without their rounding to bf16)')
    parser.add_argument('--no-fixed-rig-inputs', dest='fixed_rig_inputs',
                        action='store_false',
                        help='with --fast: the rig-dependent CUDA graphs captured again at '
                        'each new camera rig (default: the rig\'s bev_pool ranks and query '
                        'plan as graph inputs at fixed addresses, one graph for every rig)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (xxx=[a,b] for lists)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (not args.random_init):
        parser.error('give either a checkpoint or --random-init')
    if args.format_only and not args.out_dir:
        parser.error('--format-only needs --out-dir')
    if args.query_budget is not None and args.query_budget < 1:
        parser.error(f'--query-budget must be >= 1, got {args.query_budget}')
    for name, given in (('--query-budget', args.query_budget is not None),
                        ('--autocast-weights', args.autocast_weights),
                        ('--channels-last', args.channels_last),
                        ('--compile-modules', bool(args.compile_modules)),
                        ('--tf32-matmul', args.tf32_matmul),
                        ('--graph-stable-outputs', args.graph_stable_outputs is not None),
                        ('--fixed-track-rows', args.fixed_track_rows),
                        ('--graph-rekey-warmup', args.graph_rekey_warmup is not None),
                        ('--no-float32-queries', not args.float32_queries),
                        ('--float32-masks', args.float32_masks),
                        ('--no-fixed-rig-inputs', not args.fixed_rig_inputs)):
        if given and not args.fast:
            parser.error(f'{name} needs --fast (FastInferenceHook)')
    if args.graph_rekey_warmup is not None and args.graph_rekey_warmup < 0:
        parser.error(f'--graph-rekey-warmup must be >= 0, got {args.graph_rekey_warmup}')
    if args.graph_stable_outputs is not None and 'none' in args.graph_stable_outputs and \
            len(args.graph_stable_outputs) > 1:
        parser.error('--graph-stable-outputs: "none" goes alone, got '
                     + ' '.join(args.graph_stable_outputs))
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
    if args.amp:
        cfg.test_cfg = ConfigDict(cfg.get('test_cfg', None) or dict(type='TestLoop'))
        cfg.test_cfg.fp16 = True
    if args.fast:
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + \
            [_fast_inference_hook(args, cfg)]
    if args.merge_audit:
        cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + \
            [dict(type='MergeAuditHook', out_file=args.merge_audit)]
    return cfg


def _fast_inference_hook(args, cfg) -> dict:
    """The ``FastInferenceHook`` config of ``--fast`` and its options; SystemExit naming the
    option when the config cannot take them."""
    hook = dict(type='FastInferenceHook')
    if args.query_budget is not None:
        fresh = cfg.model.get('num_thing_queries', None)
        if fresh is not None and args.query_budget < fresh:
            raise SystemExit(f'error: --query-budget {args.query_budget} is less than the '
                             f'{fresh} fresh thing queries of {args.config} '
                             '(model.num_thing_queries); the live tracks need rows on top')
        hook['query_budget'] = args.query_budget
    if args.autocast_weights:
        if not (cfg.get('test_cfg', None) or {}).get('fp16', False):
            raise SystemExit(f'error: --autocast-weights needs a test loop under autocast: '
                             f'{args.config} tests in float32 (test_cfg has no fp16=True); '
                             'add --amp')
        hook['autocast_weights'] = True
    if args.channels_last:
        hook['channels_last'] = True
    if args.compile_modules:
        hook['compile_modules'] = list(args.compile_modules)
    if args.tf32_matmul:
        hook['tf32_matmul'] = True
    if args.graph_stable_outputs is not None:
        hook['stable_outputs'] = [n for n in args.graph_stable_outputs if n != 'none']
    if args.fixed_track_rows:
        hook['fixed_track_rows'] = True
    if args.graph_rekey_warmup is not None:
        hook['graph_rekey_warmup'] = args.graph_rekey_warmup
    if not args.float32_queries:
        hook['float32_queries'] = False
    if not args.fixed_rig_inputs:
        hook['fixed_rig_inputs'] = False
    if args.float32_masks:
        hook['float32_masks'] = True
    return hook


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
    close_process_group()


if __name__ == '__main__':
    main()
