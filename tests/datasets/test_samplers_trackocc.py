"""ClipSampler / SequenceStreamSampler: seeding, DDP splits, whole sequences per rank."""
import numpy as np
import pytest

from trackocc.datasets import ClipSampler, SequenceStreamSampler


class FakeDataset:
    """Items with the bookkeeping of WaymoTrackOccDataset (sequence ids + positions)."""

    def __init__(self, lengths):
        self.item_sequence_ids = np.concatenate(
            [np.full(n, 1000 + s) for s, n in enumerate(lengths)]).astype(np.int64)
        self.item_positions = np.concatenate([np.arange(n) for n in lengths])

    def __len__(self):
        return len(self.item_sequence_ids)


def test_clip_sampler_seeded_shuffled_and_split():
    ds = FakeDataset([5, 7, 3, 6])
    sampler = ClipSampler(ds, seed=3, rank=0, world_size=1)
    first = list(sampler)
    assert sorted(first) == list(range(len(ds))) and first != sorted(first)
    assert list(ClipSampler(ds, seed=3, rank=0, world_size=1)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    ranks = [list(ClipSampler(ds, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert all(len(r) == len(ClipSampler(ds, seed=3, rank=0, world_size=3)) for r in ranks)
    covered = [i for r in ranks for i in r]
    assert set(covered) == set(range(len(ds)))
    assert len(covered) == 3 * int(np.ceil(len(ds) / 3))  # round_up pads by repetition
    no_pad = [list(ClipSampler(ds, seed=3, rank=r, world_size=3, round_up=False))
              for r in range(3)]
    assert sorted(i for r in no_pad for i in r) == list(range(len(ds)))


def test_clip_sampler_epoch_stride_thins_each_sequence():
    ds = FakeDataset([9, 6])
    sampler = ClipSampler(ds, seed=0, epoch_stride=3, rank=0, world_size=1, shuffle=False)
    seen = set()
    for epoch in range(12):
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert len(items) == len(sampler) == 5
        for seq in (1000, 1001):
            pos = {int(ds.item_positions[i]) % 3 for i in items
                   if ds.item_sequence_ids[i] == seq}
            assert len(pos) == 1  # one phase per sequence and epoch
        seen.update(items)
    assert seen == set(range(len(ds)))
    with pytest.raises(ValueError):
        ClipSampler(ds, seed=0, epoch_stride=0, rank=0, world_size=1)


@pytest.mark.parametrize('lengths', [[5, 7, 3, 6], [10, 1, 1, 1, 1], [4, 4]])
def test_stream_sampler_gives_ranks_whole_sequences(lengths):
    ds = FakeDataset(lengths)
    world = 2
    parts = [list(SequenceStreamSampler(ds, rank=r, world_size=world)) for r in range(world)]
    assert all(len(SequenceStreamSampler(ds, rank=r, world_size=world)) == len(p)
               for r, p in enumerate(parts))
    # disjoint and covering, every rank streams its items in dataset order
    assert sorted(parts[0] + parts[1]) == list(range(len(ds)))
    assert not set(parts[0]) & set(parts[1])
    for part in parts:
        assert part == sorted(part)
    seqs = [set(ds.item_sequence_ids[p].tolist()) for p in parts]
    assert not seqs[0] & seqs[1], 'a sequence was split across ranks'
    for part in parts:  # each sequence present starts at its first frame
        for seq in set(ds.item_sequence_ids[part].tolist()):
            first = next(i for i in part if ds.item_sequence_ids[i] == seq)
            assert ds.item_positions[first] == 0
    assert all(len(p) > 0 for p in parts)


def test_stream_sampler_on_dataset(tiny_data_root):
    from trackocc.datasets import WaymoTrackOccDataset
    from trackocc.structures import CAMERA_FOLDERS, OCC_DIR
    prefix = dict(pts='kitti_format/training/velodyne', occ=f'{OCC_DIR}/training',
                  **{c: f'kitti_format/training/{f}' for c, f in CAMERA_FOLDERS.items()})
    # the train split streamed as a test set: 2 sequences (6 + 4 frames)
    ds = WaymoTrackOccDataset(data_root=tiny_data_root, data_prefix=prefix, pipeline=[],
                              ann_file='kitti_format/waymo_infos_train_jpg.pkl', test_mode=True)
    parts = [list(SequenceStreamSampler(ds, rank=r, world_size=2)) for r in range(2)]
    assert parts == [list(range(6)), list(range(6, 10))]
    with pytest.raises(ValueError, match='shuffle'):
        SequenceStreamSampler(ds, shuffle=True)
