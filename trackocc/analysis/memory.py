"""Peak device memory of a benchmark (CUDA caching allocator; nothing is reported on CPU)."""
from typing import Callable, Dict, Union

import torch

Device = Union[torch.device, str]


def _is_cuda(device: Device) -> bool:
    return torch.device(device).type == 'cuda'


def peak_memory_stats(device: Device) -> Dict[str, float]:
    """``peak_allocated_mib`` / ``peak_reserved_mib`` since the last reset ({} on CPU)."""
    if not _is_cuda(device):
        return {}
    return dict(peak_allocated_mib=torch.cuda.max_memory_allocated() / 2**20,
                peak_reserved_mib=torch.cuda.max_memory_reserved() / 2**20)


def reset_peak_memory(device: Device) -> None:
    """Restart the peak statistics (the caching allocator keeps its blocks)."""
    if _is_cuda(device):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def release_cached_memory(device: Device) -> None:
    """Return cached blocks to the driver and restart the peak statistics."""
    if _is_cuda(device):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib_of(fn: Callable[[], object]) -> float:
    """Peak CUDA memory (MiB) allocated while ``fn`` runs, above what was allocated before."""
    reset_peak_memory('cuda')
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
