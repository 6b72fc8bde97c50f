"""The ground truth's sizes known on the host (``gt_occ.metainfo['voxel_counts']``, counted
by ``PackTrackOccInputs`` in the loader's workers) in place of ``nonzero`` on the device, and
their checks, which the device evaluates and the detector reads with its finite-loss check
(no read of their own)."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from trackocc.structures.occ_voxel_counts import VOXEL_COUNTS_KEY, check_voxel_counts


def frame_voxel_counts(gt_occ, where: str) -> Optional[dict]:
    """The frame's ``voxel_counts`` (checked), or None when the data set no such metainfo
    (then the sizes are read from the device, one host synchronisation each)."""
    metainfo = getattr(gt_occ, 'metainfo', None) or {}
    counts = metainfo.get(VOXEL_COUNTS_KEY)
    if counts is None:
        return None
    return check_voxel_counts(counts, len(gt_occ.instance_ids), where)


def stuff_classes(present: Sequence[int], num_classes: int, thing_classes: Sequence[int],
                  free_class: int) -> List[int]:
    """The stuff segments' labels, ascending, among the ``present`` class ids of the
    visible voxels (as :func:`~trackocc.models.losses.stuff_targets` finds them on the
    device)."""
    skip = {int(free_class), *(int(c) for c in thing_classes)}
    return sorted(int(c) for c in present if 0 <= c < num_classes and int(c) not in skip)


class HostCountChecks:
    """Device-side checks that a size taken from the host is the ground truth's: each
    ``add(what, ok)`` keeps a 0-dim bool tensor, evaluated later together with the losses'
    finite check (one host read for all)."""

    def __init__(self):
        self._checks: List[Tuple[str, Tensor]] = []

    def __len__(self) -> int:
        return len(self._checks)

    def add(self, what: str, ok: Tensor) -> None:
        self._checks.append((what, ok.reshape(())))

    def flags(self) -> Optional[Tensor]:
        """(n,) bool of every check, or None if there is none."""
        return torch.stack([ok for _, ok in self._checks]) if self._checks else None

    def failed(self, flags: Tensor) -> List[str]:
        """The descriptions of the checks that ``flags`` (as :meth:`flags`) says failed."""
        return [what for (what, _), ok in zip(self._checks, flags.tolist()) if not ok]
