"""Parameters and FLOPs per stage of a TrackOcc model for one streamed frame.

    python tools/analysis_tools/get_flops.py CONFIG [--device cuda] [--json OUT.json]

Builds the model (random weights), streams one synthetic frame (batch 1, the config's cameras
and input size; ``trackocc.analysis.streaming``) to create the track state, then counts the
next frame with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs = 2 x multiply-accumulates
of matmul, conv, bmm, addmm, attention kernels; element-wise ops, interpolation,
``grid_sample`` and the custom CUDA ops bev_pool_v2 / 3D deformable attention count 0). Stages
are the detector's sub-modules, grouped as in ``trackocc.analysis.stages``; ``other`` is what
the detector computes outside them (reference points, the panoptic merge).
"""
from __future__ import annotations

import argparse
import json

import torch

from trackocc.analysis.model_setup import build_model, load_config, quiet_logger
from trackocc.analysis.stages import stage_modules
from trackocc.analysis.streaming import second_frame
from trackocc.evaluation.functional import atomic_write_text
from trackocc.utils.synthetic_inputs import input_geometry


def _count(counts: dict, key: str) -> int:
    return int(sum(counts.get(key, {}).values()))


def count_frame(model, device: torch.device, max_live_tracks: int = 64) -> dict:
    """FLOPs and parameters per stage for the second of two streamed frames (at most
    ``max_live_tracks`` live tracks carried from the first, see ``cap_live_tracks``)."""
    from torch.utils.flop_counter import FlopCounterMode
    inputs, clip, live, num_queries = second_frame(model, max_live_tracks)
    # FlopCounterMode's module tracker trips over parameter views under no_grad: count with
    # gradients off at the parameters instead
    requires = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    counter = FlopCounterMode(display=False, depth=None)
    try:
        with counter:
            model.predict(inputs, [clip])
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    counts = counter.get_flop_counts()
    # predict() is not forward(): the tracker names each sub-module call by its class
    total = _count(counts, 'Global')
    stages, counted_flops, counted_params = {}, 0, 0
    for stage, mods in stage_modules(model).items():
        flops = sum(_count(counts, type(m).__name__) for _, m in mods)
        params = sum(p.numel() for _, m in mods for p in m.parameters())
        stages[stage] = dict(gflops=flops / 1e9, params_m=params / 1e6)
        counted_flops += flops
        counted_params += params
    all_params = sum(p.numel() for p in model.parameters())
    stages['other'] = dict(gflops=(total - counted_flops) / 1e9,
                           params_m=(all_params - counted_params) / 1e6)
    num_cams, img_hw = input_geometry(model)
    return dict(num_cams=num_cams, input_hw=list(img_hw), occ_size=list(model.occ_size),
                live_tracks=live, thing_queries=num_queries,
                total_gflops=total / 1e9, total_params_m=all_params / 1e6,
                trainable_params_m=sum(p.numel() for p, r in zip(model.parameters(), requires)
                                       if r) / 1e6,
                stages=stages)


def format_table(result: dict) -> str:
    lines = ['| stage | GFLOPs | params (M) |', '|---|---:|---:|']
    for stage, v in result['stages'].items():
        lines.append(f"| {stage} | {v['gflops']:.2f} | {v['params_m']:.2f} |")
    lines.append(f"| total | {result['total_gflops']:.2f} | {result['total_params_m']:.2f} |")
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a TrackOcc model')
    parser.add_argument('config')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--max-live-tracks', type=int, default=64,
                        help='live tracks carried into the counted frame (0: no cap)')
    parser.add_argument('--json', help='write the result here')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    quiet_logger()
    cfg = load_config(args.config)
    model = build_model(cfg, None, args.device)
    result = dict(config=args.config, device=args.device,
                  **count_frame(model, torch.device(args.device), args.max_live_tracks))
    print(f"{args.config}: {result['num_cams']} cameras x {result['input_hw']}, "
          f"grid {result['occ_size']}, one streamed frame with {result['live_tracks']} live "
          f"tracks ({result['thing_queries']} thing queries)")
    print(format_table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    main()
