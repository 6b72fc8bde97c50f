#!/usr/bin/env python
"""Export the per-frame network of a trackocc model to ONNX (docs/deployment.md).

    python tools/deployment/export_onnx.py configs/trackocc/trackocc_tiny_synthetic.py \
        work_dirs/trackocc_tiny_synthetic/iter_200.pth --out work_dirs/onnx_tiny

Writes, into ``--out``: ``trackocc_frame.onnx`` (image encoder, view transformer with
bev_pool, volume and occupancy encoders, mask decoder head for any number of thing queries;
custom ops in their PyTorch forms, opset 20), ``config.py`` (the config it was exported with)
and ``export_info.json`` (inputs, outputs, opset, versions, and the onnxruntime-vs-PyTorch
check of the example frame). The example frame, the first of the config's test data, only
serves the tracing: the inputs whose size depends on the camera rig are dynamic. The streaming
tracker runs in Python around the session (``trackocc.deployment.OnnxStreamingRunner``).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

from mmengine.config import DictAction

ONNX_NAME = 'trackocc_frame.onnx'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file (its test_dataloader gives the example)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file')
    parser.add_argument('--random-init', action='store_true',
                        help="use the config's weight initialisation (seed 0) instead of a "
                             'checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--data-root', help="data set root of the example frame (default: "
                                            "the config's)")
    parser.add_argument('--opset', type=int, default=20, help='ONNX opset (>= 20)')
    parser.add_argument('--num-queries', type=int, default=None,
                        help='thing queries of the example input (default: the fresh ones); '
                             'the graph takes any number')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the onnxruntime-vs-PyTorch check of the example frame')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted error of the check, relative to the largest '
                             'magnitude of each output (default 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (not args.random_init):
        parser.error('give either a checkpoint or --random-init')
    if args.num_queries is not None and args.num_queries < 1:
        parser.error(f'--num-queries must be >= 1, got {args.num_queries}')
    return args


def example_frame(cfg, model, data_root=None):
    """The first frame of the config's test data, through the model's data preprocessor:
    (imgs (N, 3, H, W), frame metainfo)."""
    from mmengine.dataset import pseudo_collate
    from trackocc.registry import DATASETS
    ds_cfg = cfg.test_dataloader.dataset.copy()
    if data_root is not None:
        ds_cfg.data_root = data_root.rstrip('/') + '/'
    dataset = DATASETS.build(ds_cfg)
    if len(dataset) == 0:
        raise ValueError(f'the test data at {ds_cfg.get("data_root")} hold no frame')
    batch = model.data_preprocessor(pseudo_collate([dataset[0]]), False)
    return batch['inputs']['imgs'][0, 0], batch['data_samples'][0].video_data_samples[0].metainfo


def verify(model, onnx_file, geometry, imgs):
    """Largest error of each output of onnxruntime vs PyTorch on the example frame, relative
    to the output's largest magnitude."""
    import torch
    from trackocc.deployment import (INPUT_NAMES, OUTPUT_NAMES, TrackOccFrameNetwork,
                                     network_inputs, onnx_session)
    with torch.no_grad():
        tracks = model._empty_tracks()
        inputs = network_inputs(geometry, imgs, tracks.query, tracks.ref_pts.sigmoid())
        want = TrackOccFrameNetwork(model)(*inputs)
    got = onnx_session(onnx_file).run(None, {n: t.detach().numpy()
                                             for n, t in zip(INPUT_NAMES, inputs)})
    return {name: float((torch.from_numpy(g) - w).abs().max() / w.abs().max().clamp(min=1e-12))
            for name, g, w in zip(OUTPUT_NAMES, got, want)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        print(f'error: checkpoint {args.checkpoint} does not exist', file=sys.stderr)
        return 2

    import onnx
    import onnxruntime
    import torch

    from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
    from trackocc.deployment import (DYNAMIC_AXES, INPUT_NAMES, OUTPUT_NAMES,
                                     export_frame_network, frame_geometry)
    from trackocc.engine.checkpoint_files import atomic_write_text

    quiet_logger('trackocc_export_onnx')
    cfg = load_config(args.config, args.cfg_options)
    try:
        model = build_model(cfg, args.checkpoint, 'cpu', strict=True)
    except (OSError, RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    model.eval()
    try:
        imgs, meta = example_frame(cfg, model, args.data_root)
        geometry = frame_geometry(model, meta)
    except (OSError, ValueError, KeyError) as err:
        print(f'error: example frame: {err}', file=sys.stderr)
        return 2

    os.makedirs(args.out, exist_ok=True)
    onnx_file = osp.join(args.out, ONNX_NAME)
    start = time.perf_counter()
    try:
        export_frame_network(model, geometry, imgs, onnx_file, num_queries=args.num_queries,
                             opset=args.opset)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f'wrote {onnx_file} ({osp.getsize(onnx_file) / 2**20:.1f} MiB, {seconds:.1f} s)')
    atomic_write_text(osp.join(args.out, 'config.py'), cfg.pretty_text)

    errors = None if args.no_verify else verify(model, onnx_file, geometry, imgs)
    graph = onnx.load(onnx_file).graph

    def describe(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in values}

    info = dict(
        onnx=ONNX_NAME, config=osp.abspath(args.config),
        checkpoint=None if args.checkpoint is None else osp.abspath(args.checkpoint),
        opset=args.opset, inputs=describe(graph.input), outputs=describe(graph.output),
        input_order=list(INPUT_NAMES), output_order=list(OUTPUT_NAMES),
        dynamic_axes={k: {str(a): n for a, n in v.items()} for k, v in DYNAMIC_AXES.items()},
        versions=dict(torch=torch.__version__, onnx=onnx.__version__,
                      onnxruntime=onnxruntime.__version__),
        example_relative_errors=errors)
    atomic_write_text(osp.join(args.out, 'export_info.json'), json.dumps(info, indent=2))
    if errors is not None:
        worst = max(errors, key=errors.get)
        print('onnxruntime vs PyTorch on the example frame, largest error / largest value: '
              + ', '.join(f'{k} {v:.2g}' for k, v in errors.items()))
        if errors[worst] > args.tolerance:
            print(f'error: {worst} differs by {errors[worst]:.3g} > {args.tolerance:g}',
                  file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
