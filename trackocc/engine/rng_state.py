"""The global random number generator states of a process, as checkpoint-safe data.

Exact resume needs the RNG streams of the interrupted run: the model draws from torch's global
generator (dropout, the tracker's random query drop), a data pipeline running in the main
process (``num_workers=0``) from numpy's and Python's. The states are stored as plain Python
values and tensors, which ``torch.load(weights_only=True)`` reads back.
"""
import random

import numpy as np
import torch


def get_rng_states() -> dict:
    """States of Python's ``random``, numpy's legacy global generator, torch (CPU and CUDA)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = dict(
        python=random.getstate(),
        numpy=dict(kind=str(kind), keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`get_rng_states` returned (tensors may come back on another device).

    CUDA states are restored only when as many devices are visible as were saved.
    """
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    npy = states['numpy']
    np.random.set_state((npy['kind'], npy['keys'].cpu().numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['cached_gaussian']))
    torch.set_rng_state(states['torch'].cpu())
    cuda = states.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.cpu() for state in cuda])
