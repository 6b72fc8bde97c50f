"""Typed occupancy fields of a frame: :class:`OccupancyData` (one voxel grid with its labels)
and :class:`OccDataSample` (a ``Det3DDataSample`` whose ``gt_occ`` / ``pred_occ`` must be
:class:`OccupancyData`), in the manner of mmdet3d's ``Det3DDataSample.gt_pts_seg``.
"""
from typing import Any, Tuple

import numpy as np
import torch
from mmdet3d.structures import Det3DDataSample
from mmengine.structures import BaseDataElement

#: (X, Y, Z) grids: integer labels and bool masks
LABEL_FIELDS: Tuple[str, ...] = ('semantics', 'instances')
MASK_FIELDS: Tuple[str, ...] = ('mask_camera', 'mask_lidar', 'infov')
#: (K,) integer table of the thing instances of the frame
TABLE_FIELDS: Tuple[str, ...] = ('instance_ids', 'instance_labels')
OCC_FIELDS: Tuple[str, ...] = LABEL_FIELDS + MASK_FIELDS + TABLE_FIELDS


def _kind(value: Any) -> str:
    """'bool', 'int' or 'other' for a tensor or an ndarray."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool:
            return 'bool'
        return 'other' if value.is_floating_point() or value.is_complex() else 'int'
    if value.dtype == np.bool_:
        return 'bool'
    return 'int' if np.issubdtype(value.dtype, np.integer) else 'other'


class OccupancyData(BaseDataElement):
    """Panoptic occupancy of one frame; every field is a tensor or an ndarray.

    Data fields (all optional):
        semantics: (X, Y, Z) integer class ids (gt int64, prediction uint8).
        instances: (X, Y, Z) integer instance / track ids, 0 = none.
        mask_camera, mask_lidar, infov: (X, Y, Z) bool masks (gt only).
        instance_ids, instance_labels: (K,) integer ids and classes of the thing instances
            (gt only).

    Setting an unknown field, a wrong dtype, a grid that is not 3-D or whose shape differs
    from the grids already set raises an error naming the field.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in ('_metainfo_fields', '_data_fields'):
            self._check_field(name, value)
        super().__setattr__(name, value)

    def _check_field(self, name: str, value: Any) -> None:
        where = f'{type(self).__name__}.{name}'
        if name not in OCC_FIELDS:
            raise AttributeError(f'{where}: unknown field (known: {OCC_FIELDS})')
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise TypeError(f'{where} must be a tensor or an ndarray, got '
                            f'{type(value).__name__}')
        kind = _kind(value)
        want = 'bool' if name in MASK_FIELDS else 'int'
        if kind != want:
            raise TypeError(f'{where} must be {"bool" if want == "bool" else "integer"}, got '
                            f'dtype {value.dtype}')
        shape = tuple(value.shape)
        if name in TABLE_FIELDS:
            if len(shape) != 1:
                raise ValueError(f'{where} must be 1-D (K,), got shape {shape}')
            other = TABLE_FIELDS[1 - TABLE_FIELDS.index(name)]
            if other in self._data_fields and len(getattr(self, other)) != shape[0]:
                raise ValueError(f'{where} has {shape[0]} entries, {other} '
                                 f'{len(getattr(self, other))}')
            return
        if len(shape) != 3:
            raise ValueError(f'{where} must be an (X, Y, Z) grid, got shape {shape}')
        for other in LABEL_FIELDS + MASK_FIELDS:
            if other != name and other in self._data_fields:
                other_shape = tuple(getattr(self, other).shape)
                if other_shape != shape:
                    raise ValueError(f'{where} has shape {shape}, {other} {other_shape}')

    @property
    def grid_shape(self) -> Tuple[int, ...]:
        """(X, Y, Z) of the grids set so far (``()`` if none)."""
        for name in LABEL_FIELDS + MASK_FIELDS:
            if name in self._data_fields:
                return tuple(getattr(self, name).shape)
        return ()


class OccDataSample(Det3DDataSample):
    """A frame of TrackOcc: ``Det3DDataSample`` plus typed ``gt_occ`` and ``pred_occ``.

    Properties:
        gt_occ (OccupancyData): ground truth set by ``PackTrackOccInputs``.
        pred_occ (OccupancyData): ``semantics`` / ``instances`` written by the detector's
            ``predict``; read by ``OccSTQMetric``.
    """

    @property
    def gt_occ(self) -> OccupancyData:
        return self._gt_occ

    @gt_occ.setter
    def gt_occ(self, value: OccupancyData) -> None:
        self._set_occ(value, '_gt_occ')

    @gt_occ.deleter
    def gt_occ(self) -> None:
        del self._gt_occ

    @property
    def pred_occ(self) -> OccupancyData:
        return self._pred_occ

    @pred_occ.setter
    def pred_occ(self, value: OccupancyData) -> None:
        self._set_occ(value, '_pred_occ')

    @pred_occ.deleter
    def pred_occ(self) -> None:
        del self._pred_occ

    def _set_occ(self, value: Any, name: str) -> None:
        if not isinstance(value, OccupancyData):
            raise TypeError(f'{type(self).__name__}.{name[1:]} must be an OccupancyData, got '
                            f'{type(value).__name__}')
        self.set_field(value, name, dtype=OccupancyData)
