"""Memory traffic of one streamed TrackOcc frame: bytes read and written per op kind, per
module and per op (``trackocc.analysis.memory_traffic``).

    python tools/analysis_tools/memory_traffic.py CONFIG [CHECKPOINT] [--mode fp32|fp16|bf16]
        [--depth 2] [--top 25] [--lines] [--fuse-conv-bn] [--autocast-weights]
        [--max-live-tracks 64] [--query-budget N] [--reference-ops] [--device cpu]
        [--json OUT.json] [--cfg-options KEY=VALUE ...]

Builds the model (random weights unless a checkpoint is given), streams synthetic frame 0 to
create the track state (live tracks capped) and records frame 1 under the mode's autocast, in
eager mode; ``--fuse-conv-bn --autocast-weights`` count the eager form of benchmark.py's fast
path (batch norms folded, autocast layers' weights held in the mode's dtype). What it counts
depends on the device: on the CPU the custom ops run their PyTorch references (counted with
their intermediates), on CUDA their compiled kernels are not aten ops (not counted), and the
two autocast policies cast different op lists. On the CPU each call of a custom op
(bev_pool_v2, the 2D and 3D deformable attention) counts as the one kernel a GPU runs: its
inputs read once, its output written once (kind ``kernel``;
``trackocc.analysis.kernel_references``); ``--reference-ops`` counts their PyTorch
references op by op instead, with their intermediates, as before 2026-12-05. No timing.
"""
from __future__ import annotations

import argparse
import json
from contextlib import ExitStack, nullcontext

import torch
from mmengine.config import DictAction

from trackocc.analysis.kernel_references import references_as_kernels
from trackocc.analysis.memory_traffic import record_traffic
from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.analysis.precision import DTYPES, autocast, probe_autocast_weights
from trackocc.analysis.streaming import second_frame
from trackocc.evaluation.functional import atomic_write_text


def count_frame(model, device: torch.device, dtype, depth: int = 2, top: int = 25,
                max_live_tracks: int = 64, lines: bool = False,
                hold_weights: bool = False, reference_ops: bool = False) -> dict:
    """Traffic of the second of two streamed frames (see ``second_frame``); with
    ``hold_weights`` (and a ``dtype``) the layers that run under autocast hold their weights
    in ``dtype`` meanwhile (``benchmark.py --autocast-weights``); the custom ops as one
    kernel a call unless ``reference_ops``."""
    model.eval()
    held = None
    if hold_weights and dtype is not None:
        held = probe_autocast_weights(model, device, dtype)
    inputs, clip, live, num_queries = second_frame(model, max_live_tracks)
    with ExitStack() as scope:
        if not reference_ops:
            scope.enter_context(references_as_kernels())
        scope.enter_context(held or nullcontext())
        scope.enter_context(torch.no_grad())
        scope.enter_context(autocast(device, dtype))
        rec = scope.enter_context(record_traffic(model, depth, lines))
        model.predict(inputs, [clip])
    return dict(live_tracks=live, thing_queries=num_queries,
                autocast_weights=held.count if held is not None else 0, **rec.summary(top))


def format_tables(result: dict, modules: int = 15) -> str:
    kinds = [k for k in result['by_kind'] if k not in ('view', 'alloc')]  # move nothing
    lines = [f"total {result['total']['moved_mib']:.1f} MiB moved "
             f"({result['total']['calls']} op calls)", '',
             '| kind | calls | read MiB | written MiB |', '|---|---:|---:|---:|']
    lines += [f"| {k} | {v['calls']} | {v['read_mib']:.1f} | {v['written_mib']:.1f} |"
              for k, v in result['by_kind'].items()]
    lines += ['', '| module | MiB moved | ' + ' | '.join(kinds) + ' |',
              '|---|---:|' + '---:|' * len(kinds)]
    for name, v in list(result['by_module'].items())[:modules]:
        cells = [f"{v['kinds'][k]['moved_mib']:.1f}" if k in v['kinds'] else ''
                 for k in kinds]
        lines.append(f"| {name} | {v['total']['moved_mib']:.1f} | " + ' | '.join(cells) + ' |')
    lines += ['', '| op | kind | calls | read MiB | written MiB |', '|---|---|---:|---:|---:|']
    lines += [f"| {o['op']} | {o['kind']} | {o['calls']} | {o['read_mib']:.1f} | "
              f"{o['written_mib']:.1f} |" for o in result['top_ops']]
    lines += ['', '| module | op | kind | calls | read MiB | written MiB |',
              '|---|---|---|---:|---:|---:|']
    lines += [f"| {o['module']} | {o['op']} | {o['kind']} | {o['calls']} | "
              f"{o['read_mib']:.1f} | {o['written_mib']:.1f} |" for o in result['top_sites']]
    if 'top_lines' in result:
        lines += ['', '| source line | op | kind | calls | read MiB | written MiB |',
                  '|---|---|---|---:|---:|---:|']
        lines += [f"| {o['line']} | {o['op']} | {o['kind']} | {o['calls']} | "
                  f"{o['read_mib']:.1f} | {o['written_mib']:.1f} |" for o in result['top_lines']]
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Memory traffic of one TrackOcc frame')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', default=None)
    parser.add_argument('--mode', default='fp32', choices=list(DTYPES),
                        help='eager precision (autocast dtype); graphs / compile not counted')
    parser.add_argument('--depth', type=int, default=2,
                        help='levels of module names ops are charged to')
    parser.add_argument('--top', type=int, default=25, help='ops listed by bytes moved')
    parser.add_argument('--lines', action='store_true',
                        help='also list the trackocc source lines that move the most')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold the inference batch norms into their convolutions first')
    parser.add_argument('--autocast-weights', action='store_true',
                        help='hold the autocast layers\' weights in the mode\'s dtype (bf16 / '
                             'fp16), as benchmark.py\'s fast path does')
    parser.add_argument('--max-live-tracks', type=int, default=64,
                        help='live tracks carried into the counted frame (0: no cap)')
    parser.add_argument('--query-budget', type=int, default=None, metavar='N',
                        help='model.query_budget (fixed thing-query rows, padded)')
    parser.add_argument('--reference-ops', action='store_true',
                        help="count the custom ops' PyTorch references op by op (CPU) "
                        'instead of one kernel a call')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', help='write the result here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.depth < 1 or args.top < 1:
        raise SystemExit(f'memory_traffic: --depth and --top must be >= 1, got {args.depth} '
                         f'and {args.top}')
    quiet_logger()
    options = dict(args.cfg_options or {})
    if args.query_budget is not None:
        options['model.query_budget'] = args.query_budget
    cfg = load_config(args.config, options)
    model = build_model(cfg, args.checkpoint, args.device).eval()
    device = torch.device(args.device)
    folded = 0
    if args.fuse_conv_bn:
        from trackocc.utils.fuse_conv_bn import fuse_conv_bn
        folded = fuse_conv_bn(model)
    result = dict(config=args.config, checkpoint=args.checkpoint, mode=args.mode,
                  device=args.device, depth=args.depth, fused_batch_norms=folded,
                  **count_frame(model, device, DTYPES[args.mode], args.depth, args.top,
                                args.max_live_tracks, args.lines, args.autocast_weights,
                                args.reference_ops))
    print(f"{args.config} ({args.mode}, {args.device}): one streamed frame with "
          f"{result['live_tracks']} live tracks ({result['thing_queries']} thing queries); "
          f"{folded} batch norms folded, {result['autocast_weights']} layers' weights held")
    print(format_tables(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
