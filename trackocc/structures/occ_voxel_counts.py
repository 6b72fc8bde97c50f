"""Host-side sizes of a ground-truth frame, counted where the frame is packed.

The training losses need a few sizes that the ground truth alone decides: how many voxels
count under each visibility rule, which classes occur in them, and which listed thing
instances have a voxel. Computed on a GPU each size is a ``nonzero`` (a host wait) per frame;
counted here from the numpy arrays, in the data loader's workers, they ride along as
``gt_occ.metainfo['voxel_counts']`` (a dict of Python ints, never moved to a device):

- ``visible``: ``{rule: V}``, the voxels that count under each of :data:`VISIBILITY_RULES`;
- ``classes``: ``{rule: (c, ...)}``, the class ids (ascending) of those voxels;
- ``instance_voxels``: ``(n, ...)``, per entry of ``instance_ids`` its voxels in
  ``instances`` over the whole grid.

Needs numpy only (see :mod:`trackocc.structures`).
"""
from typing import Dict

import numpy as np

#: metainfo key of :class:`~trackocc.structures.OccupancyData` holding the counts
VOXEL_COUNTS_KEY = 'voxel_counts'
#: the detector's ``train_visibility`` rules: ``mask_camera``, or ``mask_camera & infov``
VISIBILITY_RULES = ('camera', 'camera_and_infov')
#: the ground-truth arrays the counts are made of
COUNTED_FIELDS = ('semantics', 'instances', 'mask_camera', 'infov', 'instance_ids')


def _present_classes(values: np.ndarray) -> tuple:
    """Ascending distinct class ids of ``values`` (a bincount when they are small ids)."""
    if values.size == 0:
        return ()
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < 1 << 16:
        return tuple(int(c) for c in np.flatnonzero(np.bincount(values)))
    return tuple(int(c) for c in np.unique(values))


def occupancy_voxel_counts(semantics: np.ndarray, instances: np.ndarray,
                           mask_camera: np.ndarray, infov: np.ndarray,
                           instance_ids: np.ndarray) -> Dict[str, object]:
    """The counts of one frame (module docstring).

    Args:
        semantics, instances (np.ndarray): (X, Y, Z) integer class and instance ids.
        mask_camera, infov (np.ndarray): (X, Y, Z) bool.
        instance_ids (np.ndarray): (K,) integer ids of the frame's thing instances.
    """
    semantics, instances = np.asarray(semantics), np.asarray(instances)
    mask_camera, infov = np.asarray(mask_camera, bool), np.asarray(infov, bool)
    masks = dict(camera=mask_camera, camera_and_infov=mask_camera & infov)
    visible, classes = {}, {}
    for rule in VISIBILITY_RULES:
        values = semantics[masks[rule]]
        visible[rule] = int(values.size)
        classes[rule] = _present_classes(values)
    ids, counts = np.unique(instances[instances != 0], return_counts=True)
    voxels_of = dict(zip(ids.tolist(), counts.tolist()))
    return dict(visible=visible, classes=classes,
                instance_voxels=tuple(voxels_of.get(int(i), 0)
                                      for i in np.asarray(instance_ids).reshape(-1)))


def check_voxel_counts(counts: object, num_instances: int, where: str) -> dict:
    """``counts`` if it is a dict of :func:`occupancy_voxel_counts` for a frame of
    ``num_instances`` listed instances, else a ValueError naming ``where``."""
    def bad(what: str):
        return ValueError(f'{where}: gt_occ.metainfo[{VOXEL_COUNTS_KEY!r}] {what} '
                          '(see trackocc.structures.occ_voxel_counts)')

    if not isinstance(counts, dict) or set(counts) != {'visible', 'classes',
                                                       'instance_voxels'}:
        raise bad(f'must be a dict with visible, classes and instance_voxels, got {counts!r}')
    for key in ('visible', 'classes'):
        if not isinstance(counts[key], dict) or set(counts[key]) != set(VISIBILITY_RULES):
            raise bad(f'[{key!r}] must map each of {VISIBILITY_RULES}, got {counts[key]!r}')
    if not isinstance(counts['instance_voxels'], (tuple, list)):
        raise bad(f"['instance_voxels'] must be a tuple of ints, got "
                  f"{type(counts['instance_voxels']).__name__}")
    if len(counts['instance_voxels']) != num_instances:
        raise bad(f"has {len(counts['instance_voxels'])} instance_voxels for "
                  f'{num_instances} instance_ids')
    return counts
