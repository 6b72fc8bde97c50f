"""Splits and the Waymo ``sample_idx``: ``split_id * 1_000_000 + seq * 1000 + frame``.

``split_id`` is 0 for training and 1 for validation; ``seq`` and ``frame`` are in [0, 1000).
``sequence_id = split_id * 1000 + seq`` names a sequence uniquely over both splits.
Pure Python.
"""
from typing import Dict, NamedTuple, Tuple

SPLITS: Tuple[str, ...] = ('training', 'validation')  # split id 0 / 1
SPLIT_IDS: Dict[str, int] = {name: i for i, name in enumerate(SPLITS)}
#: info pkl of each split under ``kitti_format/``
INFO_FILES: Dict[int, str] = {0: 'waymo_infos_train_jpg.pkl', 1: 'waymo_infos_val_jpg.pkl'}


class SampleIndex(NamedTuple):
    """A decoded ``sample_idx``."""
    split_id: int
    seq: int
    frame: int

    @property
    def sequence_id(self) -> int:
        """``split_id * 1000 + seq``: unique over both splits."""
        return self.split_id * 1000 + self.seq


def split_sample_idx(sample_idx: int) -> SampleIndex:
    """``sample_idx`` -> ``SampleIndex(split_id, seq, frame)`` (and ``.sequence_id``)."""
    sample_idx = int(sample_idx)
    return SampleIndex(sample_idx // 1_000_000, sample_idx % 1_000_000 // 1000,
                       sample_idx % 1000)


def make_sample_idx(split_id: int, seq: int, frame: int) -> int:
    """``(split_id, seq, frame)`` -> ``sample_idx``; a value out of range is a ValueError."""
    split_id, seq, frame = int(split_id), int(seq), int(frame)
    if not (0 <= seq < 1000 and 0 <= frame < 1000 and split_id >= 0):
        raise ValueError(f'sample_idx needs split_id >= 0, seq and frame in [0, 1000); got '
                         f'split_id={split_id} seq={seq} frame={frame}')
    return split_id * 1_000_000 + seq * 1000 + frame
