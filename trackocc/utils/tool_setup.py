"""What tools/train.py and tools/test.py share: config loading and runner construction."""
import logging
import os
import os.path as osp
import zipfile

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .distributed import adapt_config_to_cpu_distributed, init_cpu_process_group


# MMEngine's own default hooks: a None among them removes that hook (Runner does it)
_MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger', 'param_scheduler',
                           'checkpoint')


def drop_disabled_default_hooks(cfg: Config) -> None:
    """Remove ``default_hooks`` entries set to None that MMEngine does not know (its Runner
    removes its own six on None but asserts on any other), so that e.g. ``--cfg-options
    default_hooks.garbage_collection=None`` turns that hook off."""
    hooks = cfg.get('default_hooks', None) or {}
    for name in [k for k, v in hooks.items() if v is None and k not in _MMENGINE_DEFAULT_HOOKS]:
        hooks.pop(name)


def load_tool_config(args) -> Config:
    """Read ``args.config`` and apply ``--launcher``, ``--cfg-options`` (a trackocc default
    hook set to None is removed: :func:`drop_disabled_default_hooks`) and ``--work-dir``
    (default ``./work_dirs/<config name>``); export ``LOCAL_RANK`` from ``--local-rank``."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    drop_disabled_default_hooks(cfg)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def _checkpoint_dir(cfg: Config) -> str:
    """Where the config's CheckpointHook writes (``out_dir``/<work dir name>, or the work dir)."""
    out_dir = (cfg.get('default_hooks', None) or {}).get('checkpoint', {}).get('out_dir')
    if out_dir is None or out_dir == cfg.work_dir:
        return cfg.work_dir
    return osp.join(out_dir, osp.basename(cfg.work_dir.rstrip(osp.sep)))


def prepare_resume(cfg: Config) -> None:
    """Choose the checkpoint of ``cfg.resume`` before the runner is built.

    An explicit ``cfg.load_from`` must be a complete checkpoint (else FileNotFoundError /
    ``CheckpointFileError`` naming it); without one, the newest complete checkpoint of the
    work dir becomes ``load_from`` (broken ones are skipped with a warning), or, if there is
    none, ``resume`` is switched off and training starts afresh. Unless the config (or
    ``--seed``) sets a seed, the checkpoint's seed is used, so that the samplers and the data
    workers are seeded as in the interrupted run (see ``SafeCheckpointHook``).
    """
    from trackocc.engine.checkpoint_files import read_checkpoint_meta, resolve_resume_checkpoint
    if not cfg.get('resume', False):
        return
    ckpt = resolve_resume_checkpoint(cfg.get('load_from', None), cfg.work_dir,
                                     [_checkpoint_dir(cfg)])
    if ckpt is None:
        print_log(f'--resume: no checkpoint in {cfg.work_dir}; training starts from the '
                  'beginning', logger='current', level=logging.WARNING)
        cfg.resume = False
        return
    print_log(f'--resume: continuing from checkpoint {ckpt}', logger='current')
    cfg.load_from = ckpt
    seed = read_checkpoint_meta(ckpt).get('seed') if '://' not in ckpt else None
    randomness = dict(cfg.get('randomness', None) or {})
    if seed is None:
        return
    if randomness.get('seed') is None:
        cfg.randomness = dict(randomness, seed=seed)
    elif randomness['seed'] != seed:
        print_log(f'--resume: {ckpt} was trained with seed {seed}, this run uses seed '
                  f'{randomness["seed"]}: data order and augmentations will differ from an '
                  'uninterrupted run', logger='current', level=logging.WARNING)


def build_runner(cfg: Config) -> Runner:
    """Start the process group (gloo on CPU-only machines) and build the configured runner."""
    adapt_config_to_cpu_distributed(cfg, cfg.launcher)
    init_cpu_process_group(cfg.launcher)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def check_checkpoint_matches(model: torch.nn.Module, path: str) -> None:
    """Raise if the weights in ``path`` do not fit ``model`` (missing/unexpected keys or shapes).

    MMEngine loads test checkpoints non-strictly and only logs mismatches, which would score a
    partly random model; this names the file and the offending keys instead. The file is
    memory-mapped, so only the key table is read here.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    size = osp.getsize(path)
    if size == 0:
        raise RuntimeError(f'checkpoint {path} is empty (0 bytes): not a PyTorch checkpoint '
                           '(an interrupted save?)')
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive since torch 1.6
        raise RuntimeError(f'checkpoint {path} ({size} bytes) is not a PyTorch checkpoint: no '
                           'zip archive directory found, so the file is corrupt or truncated '
                           '(or not written by torch.save)')
    try:
        ckpt = torch.load(path, map_location='cpu', mmap=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise RuntimeError(f'checkpoint {path} cannot be read: {type(err).__name__}: {err}') \
            from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise RuntimeError(f'checkpoint {path} holds no state_dict')
    model = getattr(model, 'module', model)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state)
                    if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or shapes:
        def head(keys):
            return ', '.join(keys[:5]) + (f' ... (+{len(keys) - 5})' if len(keys) > 5 else '')
        problems = [f'{len(missing)} missing: {head(missing)}' if missing else '',
                    f'{len(unexpected)} unexpected: {head(unexpected)}' if unexpected else '',
                    f'{len(shapes)} with other shapes: {head(shapes)}' if shapes else '']
        raise RuntimeError(f'checkpoint {path} does not match the model of this config; keys '
                           + '; '.join(p for p in problems if p))
