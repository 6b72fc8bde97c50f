"""Distributed start-up that also works on machines without CUDA."""
import os

import torch
import torch.distributed as dist


def adapt_config_to_cpu_distributed(cfg, launcher: str) -> None:
    """On a machine without CUDA, make a distributed config run on CPU: gloo backend and a
    DDP wrapper without ``device_ids`` (MMEngine passes the local rank as a CUDA device)."""
    if launcher == 'none' or torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg', None) or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def init_cpu_process_group(launcher: str) -> bool:
    """Start a gloo process group for ``--launcher pytorch`` when CUDA is absent.

    MMEngine's ``init_dist('pytorch')`` always calls ``torch.cuda.set_device``, which fails on a
    CPU-only build of torch. The Runner skips its own initialisation when a group already exists,
    so the tools call this first. Returns whether a group was started here.
    """
    if launcher != 'pytorch' or torch.cuda.is_available() or dist.is_initialized():
        return False
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the torchrun environment; missing {missing}')
    dist.init_process_group(backend='gloo', init_method='env://')
    return True


def close_process_group() -> None:
    """End the run's process group once every rank has reached this point (a no-op without
    one): a gloo group left to the interpreter's exit can abort a rank with 'terminate called
    without an active exception' after the work is done, failing the launcher."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
