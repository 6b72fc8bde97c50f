"""Samplers for clip training and for sequence-streaming inference under DDP.

Both read the per-item sequence bookkeeping of :class:`WaymoTrackOccDataset`
(``item_sequence_ids`` (L,), ``item_positions`` (L,): position of an item's first frame in its
sequence).
"""
import math
from typing import Iterator, List, Optional, Sized

import numpy as np
import torch
from torch.utils.data import Sampler
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from trackocc.registry import DATA_SAMPLERS


def _sequence_ids(dataset: Sized) -> np.ndarray:
    if getattr(dataset, '_fully_initialized', True) is False:
        dataset.full_init()
    ids = getattr(dataset, 'item_sequence_ids', None)
    if ids is None:
        raise TypeError(f'{type(dataset).__name__} has no item_sequence_ids; these samplers need '
                        'a sequence-aware dataset such as WaymoTrackOccDataset')
    return np.asarray(ids)


def _dist(rank: Optional[int], world_size: Optional[int]):
    dist_rank, dist_world = get_dist_info()
    rank = dist_rank if rank is None else int(rank)
    world_size = dist_world if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f'rank {rank} is outside world_size {world_size}')
    return rank, world_size


@DATA_SAMPLERS.register_module()
class ClipSampler(Sampler):
    """Shuffled, seeded, DDP-aware sampler of training clips.

    Every epoch draws a permutation from ``seed + epoch`` (identical on all ranks), pads it to
    a multiple of ``world_size`` (``round_up``) and gives rank r the items r, r + W, ...

    With ``epoch_stride = k > 1`` an epoch keeps only every k-th clip of each sequence (clips
    of stride 1 overlap in T - 1 frames), with a random phase per (epoch, sequence): epochs get
    k times shorter while all clips are still visited over epochs. The length is fixed to
    the largest possible count so that ``len(sampler)`` does not change between epochs.

    Args:
        dataset: A dataset with ``item_sequence_ids`` (and ``item_positions`` if k > 1).
        shuffle (bool): Shuffle items (False keeps dataset order, for debugging).
        seed (int, optional): Shared seed; synchronised across ranks when None.
        round_up (bool): Pad so every rank gets the same number of items.
        epoch_stride (int): k above.
        rank, world_size (int, optional): Override the distributed info (tests, tools).
    """

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: Optional[int] = None,
                 round_up: bool = True, epoch_stride: int = 1, rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        self.dataset = dataset
        self.rank, self.world_size = _dist(rank, world_size)
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.round_up = round_up
        self.epoch_stride = int(epoch_stride)
        if self.epoch_stride < 1:
            raise ValueError(f'epoch_stride must be >= 1, got {epoch_stride}')
        self.epoch = 0
        self.sequence_ids = _sequence_ids(dataset)
        if self.epoch_stride > 1:
            self.positions = np.asarray(dataset.item_positions)
            _, counts = np.unique(self.sequence_ids, return_counts=True)
            size = int(np.sum(np.ceil(counts / self.epoch_stride)))
        else:
            size = len(self.sequence_ids)
        if self.round_up:
            self.num_samples = math.ceil(size / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((size - self.rank) / self.world_size)
            self.total_size = size

    def _epoch_items(self, gen: torch.Generator) -> np.ndarray:
        if self.epoch_stride == 1:
            return np.arange(len(self.sequence_ids))
        uniq, inverse = np.unique(self.sequence_ids, return_inverse=True)
        phases = torch.randint(self.epoch_stride, (len(uniq),), generator=gen).numpy()
        return np.flatnonzero(self.positions % self.epoch_stride == phases[inverse])

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator()
        gen.manual_seed(self.seed + self.epoch)
        items = self._epoch_items(gen)
        if self.shuffle:
            items = items[torch.randperm(len(items), generator=gen).numpy()]
        indices = items.tolist()
        if len(indices) < self.total_size:  # pad by cycling (round_up or a short phase)
            indices = (indices * (self.total_size // max(len(indices), 1) + 1))[:self.total_size]
        indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.world_size])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use a new permutation (and new phases) for ``epoch``."""
        self.epoch = int(epoch)


@DATA_SAMPLERS.register_module()
class SequenceStreamSampler(Sampler):
    """Gives each rank whole sequences, frames in stream order (no shuffling, no padding).

    Sequences are cut into ``world_size`` contiguous groups with about equal numbers of items
    (a sequence goes to the rank in which its middle item falls), so each rank streams its
    sequences from their first frame and a tracker's state is never split across ranks. Ranks
    may get different numbers of items; the metric must gather per-rank results itself
    (mmdet's ``BaseVideoMetric`` does), not through ``len(dataset)`` truncation.

    Args:
        dataset: A dataset with ``item_sequence_ids`` in stream order (test mode).
        rank, world_size (int, optional): Override the distributed info (tests, tools).
    """

    def __init__(self, dataset: Sized, rank: Optional[int] = None,
                 world_size: Optional[int] = None, **kwargs) -> None:
        if kwargs.pop('shuffle', False):
            raise ValueError('SequenceStreamSampler never shuffles (streaming order matters)')
        kwargs.pop('seed', None)  # accepted for config compatibility with DefaultSampler
        if kwargs:
            raise TypeError(f'SequenceStreamSampler got unexpected arguments {sorted(kwargs)}')
        self.dataset = dataset
        self.rank, self.world_size = _dist(rank, world_size)
        self.rank_indices = self.split_sequences(_sequence_ids(dataset), self.world_size)
        if any(len(ind) == 0 for ind in self.rank_indices):
            print_log(f'SequenceStreamSampler: fewer sequences than the {self.world_size} ranks; '
                      'some ranks get no data', logger='current')

    @staticmethod
    def split_sequences(sequence_ids: np.ndarray, world_size: int) -> List[List[int]]:
        """Item indices per rank: contiguous runs of whole sequences, balanced by items."""
        sequence_ids = np.asarray(sequence_ids)
        total = len(sequence_ids)
        if total == 0:
            return [[] for _ in range(world_size)]
        starts = np.flatnonzero(np.r_[True, sequence_ids[1:] != sequence_ids[:-1]])
        ends = np.r_[starts[1:], total]
        if len(np.unique(sequence_ids)) != len(starts):
            raise ValueError('SequenceStreamSampler: items of one sequence are not contiguous; '
                             'the dataset must be in stream order (test_mode=True)')
        middles = (starts + ends) / 2.0
        owner = np.minimum((middles * world_size / total).astype(np.int64), world_size - 1)
        per_rank: List[List[int]] = [[] for _ in range(world_size)]
        for begin, end, rank in zip(starts, ends, owner):
            per_rank[rank].extend(range(int(begin), int(end)))
        return per_rank

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices[self.rank])

    def __len__(self) -> int:
        return len(self.rank_indices[self.rank])
