"""Targets of the thing (track) queries for one clip: per-frame instance masks, metric mask
centroids and ego-compensated velocities from the next frame."""
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.structures import InstanceData
from torch import Tensor

from trackocc.utils.device_constants import device_constant, to_device_async
from ..trackers.ego_motion import relative_ego_transform
from .host_counts import HostCountChecks, frame_voxel_counts, stuff_classes


def voxel_centers(occ_size: Sequence[int], pc_range: Sequence[float],
                  device=None) -> Tensor:
    """(X*Y*Z, 3) metric centres of the grid voxels in flattened (X, Y, Z) order."""
    device = torch.device('cpu') if device is None else device
    lo = device_constant(list(pc_range[:3]), device)  # cached: no copy per clip
    hi = device_constant(list(pc_range[3:6]), device)
    size = device_constant(list(occ_size), device)
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in occ_size]
    idx = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1).reshape(-1, 3)
    return lo + (idx + 0.5) * (hi - lo) / size


VELOCITY_SOURCES = ('any_voxel', 'instance_table')


def build_thing_targets(gt_occs: List,
                        ego2globals: List,
                        pc_range: Sequence[float],
                        time_interval: float = 0.5,
                        with_velo: bool = True,
                        velocity_source: str = 'any_voxel',
                        checks: Optional[HostCountChecks] = None) -> List[InstanceData]:
    """Thing targets for the T frames of one clip.

    Args:
        gt_occs (list): T ``gt_occ`` elements (docs/data_contract.md) with ``instances``
            (X, Y, Z) int64, ``instance_ids`` (K,) and ``instance_labels`` (K,).
        ego2globals (list): T (4, 4) ego poses.
        pc_range (list[float]): grid range in metres.
        time_interval (float): seconds between consecutive clip frames.
        with_velo (bool): add the velocity (3 values, NaN when the instance is absent
            from the next frame or the frame is the last of the clip).
        velocity_source (str): which next-frame instances give a velocity target:
            ``'any_voxel'`` (the reference): an instance with at least one voxel anywhere in
            the next frame's grid, its centroid over all those voxels; ``'instance_table'``:
            only instances listed in the next frame's ``instance_ids`` (i.e. with a voxel
            the cameras see there).
        checks (HostCountChecks, optional): where a frame's ``voxel_counts`` (metainfo of
            its ``gt_occ``) say which instances have a voxel, that list is used (no host
            synchronisation) and its check against the device's counts is added here;
            without ``checks`` or counts, one host synchronisation a frame.

    Returns:
        list[InstanceData]: per frame ``obj_ids`` (K,) long, ``labels`` (K,) long,
        ``masks`` (K, X*Y*Z) bool, ``centers`` (K, 3 or 6) float. Instances listed in
        ``instance_ids`` but without a voxel in ``instances`` are dropped.
    """
    if len(gt_occs) != len(ego2globals):
        raise ValueError(f'{len(gt_occs)} gt_occ frames but {len(ego2globals)} ego poses')
    if velocity_source not in VELOCITY_SOURCES:
        raise ValueError(f'velocity_source must be one of {VELOCITY_SOURCES}, got '
                         f'{velocity_source!r}')
    targets = []
    coords = None
    for gt in gt_occs:
        for key in ('instances', 'instance_ids', 'instance_labels'):
            if key not in gt:
                raise KeyError(f'gt_occ lacks `{key}` (see docs/data_contract.md)')
        inst = gt.instances.reshape(-1)
        # host arrays go to the device without a blocking copy
        ids = to_device_async(gt.instance_ids, inst.device, torch.long).reshape(-1)
        labels = to_device_async(gt.instance_labels, inst.device, torch.long).reshape(-1)
        if ids.shape != labels.shape:
            raise ValueError(f'gt_occ has {len(ids)} instance_ids but {len(labels)} labels')
        if coords is None:
            coords = voxel_centers(gt.instances.shape, pc_range, inst.device)
        masks = inst[None] == ids[:, None]
        counts = masks.sum(1)
        host = None if checks is None else frame_voxel_counts(gt, 'build_thing_targets')
        if host is None:
            # the one host synchronisation of a frame: K, the instances with a voxel
            keep = torch.nonzero(counts > 0, as_tuple=True)[0]
        else:  # the voxel counts from the host, and the kept rows; one copy for both
            voxels = np.asarray(host['instance_voxels'], dtype=np.int64)
            both = to_device_async(np.concatenate([voxels, np.flatnonzero(voxels > 0)]),
                                   inst.device, torch.long)
            keep = both[len(voxels):]
            checks.add(f'instance_voxels of frame {len(targets)}',
                       (counts == both[:len(voxels)]).all())
        masks, ids, labels, counts = (masks.index_select(0, keep), ids.index_select(0, keep),
                                      labels.index_select(0, keep),
                                      counts.index_select(0, keep))
        centers = (masks.float() @ coords) / counts[:, None].clamp(min=1).float()
        targets.append(InstanceData(obj_ids=ids, labels=labels, masks=masks, centers=centers))

    if with_velo:
        for t, tgt in enumerate(targets):
            velo = torch.full_like(tgt.centers, float('nan'))
            if t + 1 < len(targets) and len(tgt) > 0:
                if velocity_source == 'any_voxel':
                    present, nxt_centers = _instance_centroids(
                        gt_occs[t + 1].instances.reshape(-1), tgt.obj_ids, coords)
                elif len(targets[t + 1]) > 0:
                    nxt = targets[t + 1]
                    eq = tgt.obj_ids[:, None] == nxt.obj_ids[None]
                    present = eq.any(1)
                    nxt_centers = nxt.centers[eq.float().argmax(1)]
                else:
                    present = nxt_centers = None
                if present is not None:
                    next2curr = to_device_async(
                        relative_ego_transform(ego2globals[t + 1], ego2globals[t]),
                        tgt.centers.device, tgt.centers.dtype)
                    nxt_in_curr = nxt_centers @ next2curr[:3, :3].T + next2curr[:3, 3]
                    velo = torch.where(present[:, None],
                                       (nxt_in_curr - tgt.centers) / time_interval, velo)
            tgt.centers = torch.cat([tgt.centers, velo], dim=1)
    return targets


def _instance_centroids(instances: Tensor, ids: Tensor, coords: Tensor):
    """Centroids of the voxels of each id in one frame.

    Args:
        instances (Tensor): (N,) instance id per voxel.
        ids (Tensor): (K,) ids to look up.
        coords (Tensor): (N, 3) voxel centres.

    Returns:
        present (K,) bool (the id has a voxel), centroids (K, 3) (not meaningful where
        not present).
    """
    masks = instances.to(ids.device)[None] == ids[:, None]
    counts = masks.sum(1)
    centroids = (masks.float() @ coords) / counts[:, None].clamp(min=1).float()
    return counts > 0, centroids


def stuff_targets(semantics: Tensor, visible: Tensor, num_classes: int,
                  thing_classes: Sequence[int], free_class: Optional[int] = None,
                  present: Optional[Sequence[int]] = None,
                  checks: Optional[HostCountChecks] = None):
    """Stuff segments of one frame over its visible voxels.

    Every class id in [0, C) other than free and the thing classes that occurs in a
    visible voxel is one segment (ids outside [0, C), e.g. 255, are ignored).

    Args:
        semantics (Tensor): (N,) class ids.
        visible (Tensor): (N,) bool.
        num_classes (int): C (free = C - 1 unless ``free_class`` is given).
        thing_classes (list[int]): classes predicted by the thing queries.
        present (list[int], optional): the class ids of the visible voxels when the host
            knows them (``voxel_counts``): the labels are taken from them (no host
            synchronisation) and, with ``checks``, checked against the device's.

    Returns:
        (labels (K,) long ascending, masks (K, N) bool)
    """
    free_class = num_classes - 1 if free_class is None else free_class
    seen = None
    if present is None or checks is not None:
        sem = semantics.long()
        counted = visible & (sem >= 0) & (sem < num_classes)
        # (C + 1,) flags of the classes seen; the extra slot collects the voxels that do not
        # count. index_fill_ takes its value as a scalar argument (``seen[idx] = True``
        # copied it to the device from pageable memory: a host wait on CUDA)
        seen = torch.zeros(num_classes + 1, dtype=torch.bool, device=semantics.device)
        seen.index_fill_(0, torch.where(counted, sem, num_classes), True)
        seen.index_fill_(0, device_constant([free_class, *thing_classes], semantics.device,
                                            torch.long), False)
    if present is None:  # the one wait for the device: K is data-dependent
        labels = torch.nonzero(seen[:num_classes], as_tuple=True)[0]
    else:
        host = stuff_classes(present, num_classes, thing_classes, free_class)
        labels = to_device_async(np.asarray(host, dtype=np.int64), semantics.device, torch.long)
        if seen is not None:  # the same classes seen on the device
            checks.add('stuff classes', (seen[:num_classes].sum() == len(host))
                       & seen.index_select(0, labels).all())
    masks = (semantics[None] == labels[:, None]) & visible[None]
    return labels, masks
