#!/usr/bin/env python
"""Publish a training checkpoint: weights only, optionally the EMA weights, optionally in half
precision, with the first 8 hex digits of its SHA-256 in the file name (OpenMMLab's release
convention).

    python tools/model_converters/publish_model.py work_dirs/x/iter_24000.pth \
        trackocc_r50_waymo.pth [--ema] [--dtype fp32|fp16|bf16]
    # -> trackocc_r50_waymo-1a2b3c4d.pth
    # the image backbone of the paper's nuImages detector, to initialise from (fp16: 45 MiB,
    # small enough to carry to a machine without internet)
    python tools/model_converters/publish_model.py cascade_mask_rcnn_r50_fpn_..._nuim_....pth \
        nuim_r50_backbone.pth --only backbone. --dtype fp16

Kept: ``meta`` (plus ``published``: source file, ``ema``, ``dtype``) and ``state_dict``.
Dropped: optimizer and scheduler states, the message hub, the EMA copy (``--ema`` makes it the
``state_dict``: the weights the EMA hook tests with). ``--only PREFIX`` keeps the weights whose
keys start with PREFIX, the keys unchanged (an ``init_cfg=dict(type='Pretrained',
prefix=PREFIX)`` reads them like the whole checkpoint). ``--dtype fp16`` / ``bf16`` stores the
floating-point tensors in that dtype (half the size; ``load_checkpoint`` casts them back to the
model's dtype, so results change by that rounding only). The file is written atomically.
"""
import argparse
import hashlib
import io
import os.path as osp
import sys
from collections import OrderedDict
from typing import Optional

import torch

from trackocc.engine.checkpoint_files import check_checkpoint_file
from trackocc.utils.checkpoint_compat import register_checkpoint_safe_globals
from trackocc.utils.output_files import atomic_write_bytes

DTYPES = dict(fp32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('input', help='training checkpoint (e.g. iter_N.pth)')
    parser.add_argument('output', help='file to write; the hash is added before .pth')
    parser.add_argument('--ema', action='store_true',
                        help='publish the EMA weights (error if the checkpoint has none)')
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32',
                        help='dtype of the floating-point tensors (default fp32: as trained)')
    parser.add_argument('--only', metavar='PREFIX',
                        help="keep only the weights whose keys start with PREFIX (e.g. "
                             "'backbone.'), keys unchanged")
    return parser.parse_args(argv)


def ema_weights(ema_state: dict, path: str) -> 'OrderedDict[str, torch.Tensor]':
    """The model weights of an mmengine averaged model's state dict (``module.<key>`` entries;
    its ``steps`` counter dropped)."""
    weights = OrderedDict((k[len('module.'):], v) for k, v in ema_state.items()
                          if k.startswith('module.'))
    if not weights:
        raise ValueError(f'{path}: ema_state_dict has no module.* weights '
                         f'(keys {sorted(ema_state)[:5]}...)')
    return weights


def published(ckpt: dict, path: str, ema: bool, dtype: str, only: Optional[str] = None) -> dict:
    """The checkpoint to publish from a loaded training checkpoint ``ckpt`` of ``path``
    (``only``: the weights whose keys start with this prefix)."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('state_dict'), dict):
        raise ValueError(f'{path}: not an MMEngine checkpoint (no state_dict)')
    if ema:
        if not isinstance(ckpt.get('ema_state_dict'), dict):
            raise ValueError(f'{path}: --ema, but the checkpoint has no ema_state_dict (was '
                             'it trained with an EMA hook?)')
        weights = ema_weights(ckpt['ema_state_dict'], path)
        missing = sorted(set(ckpt['state_dict']) - set(weights))
        if missing:
            raise ValueError(f'{path}: the EMA weights lack {len(missing)} keys of the model, '
                             f'e.g. {missing[:3]}')
    else:
        weights = ckpt['state_dict']
    if only is not None:
        kept = OrderedDict((k, v) for k, v in weights.items() if k.startswith(only))
        if not kept:
            roots = sorted({k.split('.')[0] + '.' for k in weights})
            raise ValueError(f'{path}: no weights under --only {only!r} (key prefixes: '
                             f'{", ".join(roots[:8])})')
        weights = kept
    cast = DTYPES[dtype]
    state_dict = OrderedDict(
        (k, v.to(cast) if torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in weights.items())
    meta = dict(ckpt.get('meta') or {})
    meta['published'] = dict(source=osp.basename(path), ema=ema, dtype=dtype)
    if only is not None:
        meta['published']['only'] = only
    return dict(meta=meta, state_dict=state_dict)


def hashed_name(path: str, digest: str) -> str:
    """``a/b.pth`` -> ``a/b-<first 8 hex digits>.pth``."""
    stem = path[:-len('.pth')] if path.endswith('.pth') else path
    return f'{stem}-{digest[:8]}.pth'


def publish(src: str, dst: str, ema: bool = False, dtype: str = 'fp32',
            only: Optional[str] = None) -> str:
    """Write the published checkpoint of ``src`` as ``dst`` with the hash of its bytes in the
    name (one atomic write: no unhashed or partial file is left behind); return its path."""
    check_checkpoint_file(src)
    register_checkpoint_safe_globals()
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    buffer = io.BytesIO()
    torch.save(published(ckpt, src, ema, dtype, only), buffer)
    data = buffer.getvalue()
    final = hashed_name(dst, hashlib.sha256(data).hexdigest())
    atomic_write_bytes(final, data)
    return final


def main(argv=None):
    args = parse_args(argv)
    try:
        final = publish(args.input, args.output, args.ema, args.dtype, args.only)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        sys.exit(f'publish_model: {err}')
    size = osp.getsize(final) / 2**20
    part = f', only {args.only}*' if args.only else ''
    print(f'publish_model: wrote {final} ({size:.1f} MiB; '
          f'{"EMA" if args.ema else "trained"} weights{part}, {args.dtype})')


if __name__ == '__main__':
    main()
