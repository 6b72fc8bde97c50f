"""Data-parallel training benchmark under ``torchrun`` (``benchmark.py --train --launcher
pytorch``): process group, one device per rank, the model wrapped as the runner would wrap it,
a check that the ranks' parameters stayed equal, and the ranks' results joined on rank 0."""
import os
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist

TORCHRUN_ENV = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def init_data_parallel(device_type: str) -> Tuple[torch.device, str]:
    """Start the process group of a ``torchrun`` worker and return ``(device, backend)``:
    ``cuda:LOCAL_RANK`` with NCCL (``mmengine.dist.init_dist``, which also makes that GPU
    current) or the CPU with gloo. A group that already exists is used as it is."""
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the torchrun environment (run it under '
                           f'python -m torch.distributed.run); missing {missing}')
    local_rank = int(os.environ['LOCAL_RANK'])
    if device_type == 'cuda':
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise RuntimeError(f'--launcher pytorch: local rank {local_rank} has no CUDA device '
                               f'({torch.cuda.device_count()} visible); start at most one '
                               f'process per GPU')
        if not dist.is_initialized():
            from mmengine.dist import init_dist
            init_dist('pytorch', backend='nccl')
        torch.cuda.set_device(local_rank)
        device = torch.device('cuda', local_rank)
    elif device_type == 'cpu':
        if not dist.is_initialized():  # mmengine's init_dist selects a CUDA device first
            dist.init_process_group(backend='gloo', init_method='env://')
        device = torch.device('cpu')
    else:
        raise ValueError(f'--launcher pytorch runs on cuda or cpu, not {device_type!r}')
    return device, dist.get_backend()


def wrap_data_parallel(cfg, model: torch.nn.Module,
                       device: torch.device) -> torch.nn.Module:
    """``model`` as ``Runner.wrap_model`` wraps it in a distributed run: batch norms converted
    by ``cfg.sync_bn`` (if set), then ``cfg.model_wrapper_cfg`` or, without one,
    ``MMDistributedDataParallel(broadcast_buffers=False,
    find_unused_parameters=cfg.find_unused_parameters)``; ``device_ids`` is this rank's GPU
    (none on the CPU). The wrapper broadcasts rank 0's parameters."""
    from mmengine.model import convert_sync_batchnorm
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    sync_bn = cfg.get('sync_bn', None)
    if sync_bn is not None:
        model = convert_sync_batchnorm(model, sync_bn)
    wrapper_cfg = cfg.get('model_wrapper_cfg', None)
    wrapper_cfg = dict(wrapper_cfg) if wrapper_cfg is not None else dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
    default_args = dict(module=model)
    if issubclass(MODEL_WRAPPERS.get(wrapper_cfg['type']), DistributedDataParallel):
        default_args['device_ids'] = [device.index] if device.type == 'cuda' else None
    return MODEL_WRAPPERS.build(wrapper_cfg, default_args=default_args)


def wrapper_facts(model: torch.nn.Module) -> dict:
    """What a data-parallel timing depends on beyond the config name: the wrapper class and
    how many batch norms of the wrapped module synchronise across ranks in training
    (``torch.nn.SyncBatchNorm`` or the host-sync-free one; frozen ``norm_eval`` layers do
    not count)."""
    from trackocc.utils.sync_batch_norm import HostSyncFreeSyncBatchNorm
    module = getattr(model, 'module', model)
    kinds = (torch.nn.SyncBatchNorm, HostSyncFreeSyncBatchNorm)
    synced = [m for m in module.modules() if isinstance(m, kinds) and m.training]
    return dict(wrapper=type(model).__name__, synchronised_batch_norms=len(synced),
                host_sync_free_batch_norms=sum(isinstance(m, HostSyncFreeSyncBatchNorm)
                                               for m in synced))


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    """All parameters of ``model`` (of the wrapped module) as one float32 vector (P,)."""
    module = getattr(model, 'module', model)
    return torch.cat([p.detach().float().reshape(-1) for p in module.parameters()])


def param_checksum(model: torch.nn.Module) -> float:
    """Float64 sum of all parameters: equal on ranks whose parameters are equal."""
    return float(_flat_params(model).double().sum())


def param_diff_to_rank0(model: torch.nn.Module) -> float:
    """Largest |parameter - rank 0's parameter| on this rank (a collective: every rank calls
    it); 0 when the gradients were all-reduced and every rank stepped alike."""
    flat = _flat_params(model)
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    return float((flat - ref).abs().max())


def gather_to_rank0(result: dict) -> Optional[List[dict]]:
    """Every rank's ``result`` (a JSON-able dict), in rank order, on rank 0; None on the
    others (a collective: every rank calls it)."""
    from mmengine.dist import all_gather_object
    gathered = all_gather_object(result)
    return gathered if dist.get_rank() == 0 else None


def join_rank_results(ranks: List[dict], backend: str) -> dict:
    """One mode's result of a data-parallel run from the per-rank results (each with
    ``iter_time``: mean / median / min / max ms). A step is as slow as the slowest rank:
    ``iter_time.mean_ms`` / ``median_ms`` are the largest of the ranks' means / medians,
    ``slowest_rank`` the rank with the largest mean; ``wall_ms_per_iter`` the largest of
    the ranks' wall-clock times per iteration (where they have one); ``param_max_abs_diff``
    the largest parameter difference to rank 0 after the timed steps (0: gradients
    synchronised)."""
    means = [r['iter_time']['mean_ms'] for r in ranks]
    slowest = max(range(len(ranks)), key=means.__getitem__)
    first = ranks[0]
    return dict(
        world_size=len(ranks), backend=backend, iters=first['iters'], warmup=first['warmup'],
        clip_frames=first['clip_frames'],
        iter_time=dict(mean_ms=means[slowest],
                       median_ms=max(r['iter_time']['median_ms'] for r in ranks),
                       slowest_rank=slowest),
        forward_ms=ranks[slowest]['forward_ms'],
        backward_step_ms=ranks[slowest]['backward_step_ms'],
        **({'wall_ms_per_iter': max(r['wall_ms_per_iter'] for r in ranks)}
           if all('wall_ms_per_iter' in r for r in ranks) else {}),
        param_max_abs_diff=max(r['param_max_abs_diff_to_rank0'] for r in ranks),
        ranks=ranks)
