#!/usr/bin/env python
"""Convert a checkpoint of the original TrackOcc (mmcv 1.x) into an MMEngine checkpoint.

    python tools/model_converters/trackocc_original_to_mmengine.py \
        trackocc_r50_704x256_3inst_3f_8gpu.pth trackocc_r50_original.pth [--ema] \
        [--config configs/trackocc/..._original-weights.py]

Accepts plain state dicts, mmcv checkpoints (``state_dict`` + ``meta``), the EMA files of the
original's MEGVIIEMAHook (``iter_N_ema.pth``: ``state_dict`` + ``updates``; ``--ema`` insists on
EMA weights) and ``module.`` / ``teacher.`` prefixed keys. Every key is renamed, folded or
dropped by the map in ``trackocc/utils/original_checkpoint.py``; unknown keys are an error.
The result is checked against the model built from ``--config`` (every key filled, equal
shapes) and written atomically as ``{'meta': ..., 'state_dict': ...}``. Run the converted
weights with the ``_original-weights`` config, which sets the switches they need.
"""
import argparse
import os.path as osp
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(
    REPO, 'configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ_original-weights.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('input', help='checkpoint of the original TrackOcc')
    parser.add_argument('output', help='MMEngine checkpoint to write')
    parser.add_argument('--ema', action='store_true',
                        help='take the EMA weights (error if the file holds none)')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='config whose model the converted weights must fit '
                             '(default: the paper model with the original-weights switches)')
    parser.add_argument('--show-map', action='store_true',
                        help='print every original key with its new name')
    return parser.parse_args(argv)


def model_state_shapes(config: str) -> dict:
    """Names and shapes of the state dict of the model ``config`` builds (not initialised)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from trackocc.registry import MODELS
    cfg = Config.fromfile(config)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'trackocc')):
        model = MODELS.build(cfg.model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _scalars(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))
            and k != 'config' and k != 'env_info'}


def convert(args) -> int:
    from trackocc.utils.original_checkpoint import convert_checkpoint_file
    if osp.abspath(args.input) == osp.abspath(args.output):
        raise ValueError(f'{args.output}: the output must not overwrite the input')
    out_dir = osp.dirname(osp.abspath(args.output))
    if not osp.isdir(out_dir):
        raise ValueError(f'{args.output}: folder {out_dir} does not exist')
    if not osp.isfile(args.config):
        raise ValueError(f'--config {args.config}: no such file')
    shapes = model_state_shapes(args.config)
    result, info = convert_checkpoint_file(args.input, ema=args.ema, model_state=shapes)
    what = 'EMA weights' if info['ema'] else 'weights'
    updates = f', {info["updates"]} EMA updates' if info['updates'] is not None else ''
    also = ' (it also holds EMA weights: --ema takes those)' if info['ema_available'] else ''
    print(f'{args.input}: {info["format"]} checkpoint, {what}{updates}{also}')
    print(f'converted: {result.summary()}; fits {osp.basename(args.config)}')
    if args.show_map:
        for src, dst in result.mapped.items():
            print(f'  {src} -> {dst}')
    for src, dst in result.folded.items():
        print(f'  folded  {src} -> {dst} (subtracted from the running mean)')
    for src, why in result.dropped.items():
        print(f'  dropped {src}: {why}')
    meta = dict(converted_from=osp.basename(args.input), source_format=info['format'],
                ema=info['ema'], ema_updates=info['updates'],
                original_meta=_scalars(info['meta']))
    from trackocc.engine.checkpoint_files import atomic_write
    atomic_write(args.output,
                 lambda f: torch.save(dict(meta=meta, state_dict=result.state_dict), f))
    print(f'wrote {args.output}')
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    from trackocc.utils.original_checkpoint import OriginalCheckpointError
    try:
        return convert(args)
    except (OriginalCheckpointError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
