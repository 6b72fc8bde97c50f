"""Ops and backward nodes of one training forward pass, as a GPU launches them.

    python tools/analysis_tools/train_ops.py CONFIG [--clip-frames 3]
        [--clip-feature-batch on|off] [--reference-ops] [--traffic] [--lines] [--top 30]
        [--cfg-options k=v ...] [--json OUT.json]

Builds the config's model (random weights, seed 0) on the CPU and one synthetic clip of
``--clip-frames`` frames with ground truth (batch 1), and counts one ``model.loss`` and its
``parse_losses`` (``trackocc.analysis.train_ops.count_training_ops``): the ATen ops that are
not views (each at least one kernel on a GPU), by source file (``--lines``: by line), and the
autograd nodes of the backward pass. The counts are the same on every machine. The 3D
convolutions run as on a GPU, the custom ops (bev_pool_v2, the 2D and 3D deformable
attention) count as the one kernel a GPU runs per call (``--reference-ops``: their PyTorch
references' own ops, as the CPU runs them), and the feature networks run once per clip as a
GPU runs them by default (``--clip-feature-batch off``: frame by frame, as on the CPU).

``--traffic`` also records the bytes every op of a second training step reads and writes,
under bfloat16 autocast as the paper config trains (``trackocc.analysis.train_ops.
training_traffic``; a device-free proxy of the time of memory-bound kernels): the forward by
kind, module and (``--lines``) line, the backward by kind, op and (``--lines``, the forward
then in anomaly mode) the forward line that made each autograd node. The paper config takes
~95 s (~140 s with ``--traffic --lines``) and ~18 GB of memory; the tiny config seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import json

from mmengine.config import DictAction

from trackocc.analysis.kernel_references import references_as_kernels
from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.analysis.train_ops import (count_training_ops, native_3d_convolutions,
                                         training_traffic)
from trackocc.evaluation.functional import atomic_write_text
from trackocc.utils.synthetic_inputs import synthetic_batch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Ops of one training forward pass')
    parser.add_argument('config')
    parser.add_argument('--clip-frames', type=int, default=3, help='frames of the clip')
    parser.add_argument('--clip-feature-batch', choices=('on', 'off'), default='on',
                        help="model.clip_feature_batch (default 'on': a GPU's default)")
    parser.add_argument('--reference-ops', action='store_true',
                        help="count the custom ops' PyTorch references op by op (as the CPU "
                        'runs them) instead of one kernel a call')
    parser.add_argument('--traffic', action='store_true',
                        help='also the bytes each op of a bf16-autocast forward moves')
    parser.add_argument('--lines', action='store_true', help='ops (and bytes) by source line')
    parser.add_argument('--top', type=int, default=30, help='files or lines listed')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--json', help='write the counts here')
    args = parser.parse_args(argv)
    if args.clip_frames < 1:
        parser.error(f'--clip-frames must be >= 1, got {args.clip_frames}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet_logger()
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, None, 'cpu').train()
    model.clip_feature_batch = args.clip_feature_batch == 'on'
    data = model.data_preprocessor(synthetic_batch(model, args.clip_frames, with_gt=True),
                                   True)
    with contextlib.ExitStack() as scope:
        scope.enter_context(native_3d_convolutions())
        if not args.reference_ops:
            scope.enter_context(references_as_kernels())
        counts = count_training_ops(model, data, args.lines, args.top)
        if args.traffic:
            traffic = training_traffic(model, data, args.lines, args.top)
            counts.update(traffic=traffic['forward'], traffic_backward=traffic['backward'])
    result = dict(config=args.config, clip_frames=args.clip_frames,
                  clip_feature_batch=model.clip_feature_batch,
                  custom_ops='reference ops' if args.reference_ops else 'one kernel a call',
                  **counts)
    print(f"forward: {result['forward_ops']} ops ({result['forward_view_ops']} views); "
          f"backward: {result['backward_nodes_from_parsed_loss']} nodes; "
          f"parse_losses: {result['parse_losses_ops']} ops; kernels: {result['kernel_calls']}")
    for where, num in result['by_file'].items():
        print(f'{num:6d}  {where}')
    if args.traffic:
        for key, title in (('traffic', 'forward'), ('traffic_backward', 'backward')):
            total = result[key]['total']
            print(f"{title} traffic (bf16 autocast): {total['moved_mib'] / 1024:.1f} GiB in "
                  f"{total['calls']} ops")
            for row in result[key].get('top_lines', result[key]['top_ops']):
                print(f"{row['moved_mib']:10.0f} MiB  {row['calls']:5d}  {row['op']:24s} "
                      f"{row.get('line', row['kind'])}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
