"""Layout of the parity dump (tools/parity/README.md), shared by the writer and the readers.

A dump is one ``torch.save`` file holding plain types only (dicts, lists, str, int, float,
bool, tensors), so ``torch.load(path, weights_only=True)`` reads it on any torch >= 1.12::

    {'format': FORMAT, 'version': VERSION,
     'meta': {...},                 # run description (see README)
     'state_dict': {name: tensor},  # the original model's parameters and buffers as initialised
     'tensors': {key: tensor},      # recorded values; large float tensors sampled, see below
     'sampled': {key: {...}}}       # how each sampled entry of 'tensors' was taken

A floating tensor with more than ``meta['max_elements']`` elements is stored as a 1-D tensor
of ``count`` values at the flat indices :func:`sample_indices` returns (a Weyl sequence: index
``k * multiplier mod numel``, ``multiplier`` coprime with ``numel``, so the indices are distinct
and spread over every dimension), and ``sampled[key]`` holds ``shape``, ``numel``, ``count``,
``multiplier`` and exact float64 statistics of the whole tensor (``sum``, ``abs_sum``,
``abs_max``, ``num_nan``, ``num_inf``).
"""
import math

FORMAT = 'trackocc-parity-reference-dump'
VERSION = 1
#: golden-ratio fraction: consecutive sample indices land far apart
_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def sample_multiplier(numel):
    """Multiplier of the sample sequence of a tensor with ``numel`` elements."""
    if numel < 2:
        return 1
    m = max(1, int(numel * _PHI))
    while math.gcd(m, numel) != 1:
        m += 1
    return m


def sample_indices(numel, count, multiplier=None):
    """Flat indices (list of int) at which a tensor of ``numel`` elements is sampled."""
    if count >= numel:
        return list(range(numel))
    m = sample_multiplier(numel) if multiplier is None else int(multiplier)
    return [(k * m) % numel for k in range(count)]


def sample_index_tensor(numel, count, multiplier=None):
    """:func:`sample_indices` as an int64 torch tensor (computed with torch, same values)."""
    import torch
    if count >= numel:
        return torch.arange(numel, dtype=torch.int64)
    m = sample_multiplier(numel) if multiplier is None else int(multiplier)
    return (torch.arange(count, dtype=torch.int64) * m) % numel
