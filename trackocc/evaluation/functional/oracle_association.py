"""Oracle association: the instance ids perfect tracking would give a sequence's predicted
masks, to split a low AQ into what the masks lose and what the association loses.

``per_voxel=False`` (oracle association): every predicted instance of a frame takes the id of
the gt instance it shares most voxels with (class-agnostic, as OccSTQ's association); one that
touches no gt instance keeps an id of its own. Ids are consistent over the sequence, so a
tube's pieces become one track; two predictions over one gt object in a frame become one
instance. ``per_voxel=True`` (oracle separation as well): every voxel of a predicted instance
that lies in a gt instance takes that instance's id, so a mask spread over several objects is
split along them; only which voxels are predicted as things is left to the model. numpy only.
"""
from typing import Dict, Hashable, Optional

import numpy as np

FIRST_ID = 2  # id 1 is special to the reference evaluator's quirks; 0 is "no instance"


class OracleAssociation:
    """Relabels one sequence's predicted instances frame by frame (:meth:`relabel`).

    Args:
        per_voxel (bool): split predicted instances along the gt instances (see above).
        max_id (int): the largest id the output may hold (int16 prediction files: 32767).
    """

    def __init__(self, per_voxel: bool = False,
                 max_id: int = int(np.iinfo(np.int16).max)) -> None:
        self.per_voxel = per_voxel
        self.max_id = max_id
        self._ids: Dict[Hashable, int] = {}
        self.frames = 0

    def _id(self, key: Hashable) -> int:
        if key not in self._ids:
            new = FIRST_ID + len(self._ids)
            if new > self.max_id:
                raise ValueError(f'oracle association: more than {self.max_id - FIRST_ID + 1} '
                                 f'ids in one sequence')
            self._ids[key] = new
        return self._ids[key]

    def relabel(self, pred_inst: np.ndarray, gt_inst: np.ndarray,
                mask: Optional[np.ndarray] = None) -> np.ndarray:
        """(N,) predicted ids (0: no instance) and the frame's (N,) gt ids -> (N,) oracle
        ids, same dtype and shape as ``pred_inst``. ``mask`` (N,) bool: only these voxels
        count as overlap (e.g. OccSTQ's evaluation mask)."""
        pred = np.asarray(pred_inst)
        gt = np.asarray(gt_inst).reshape(-1)
        flat = pred.reshape(-1)
        if gt.size != flat.size:
            raise ValueError(f'oracle association: {flat.size} predicted voxels but {gt.size} '
                             f'gt voxels')
        frame = self.frames
        self.frames += 1
        ids = np.unique(flat[flat != 0])
        if not len(ids):
            return np.zeros_like(pred)
        both = (flat != 0) & (gt != 0)
        if mask is not None:
            both &= np.asarray(mask, dtype=bool).reshape(-1)
        if self.per_voxel:
            return self._split(flat, gt, both, ids, frame).reshape(pred.shape)
        best: Dict[int, int] = {}
        if both.any():
            pairs, counts = np.unique(np.stack([flat[both].astype(np.int64),
                                                gt[both].astype(np.int64)]), axis=1,
                                      return_counts=True)
            # per predicted id the gt id of the largest count (ties: the smaller gt id)
            order = np.lexsort((pairs[1], -counts, pairs[0]))
            first = np.unique(pairs[0][order], return_index=True)[1]
            best = dict(zip(pairs[0][order][first].tolist(), pairs[1][order][first].tolist()))
        table = np.array([self._id(('gt', best[i]) if i in best else ('unmatched', frame, i))
                          for i in ids.tolist()], dtype=flat.dtype)  # per sorted predicted id
        out = np.zeros_like(flat)
        instance = flat != 0
        out[instance] = table[np.searchsorted(ids, flat[instance])]
        return out.reshape(pred.shape)

    def _split(self, flat: np.ndarray, gt: np.ndarray, inside: np.ndarray, ids: np.ndarray,
               frame: int) -> np.ndarray:
        """Per-voxel ids: the gt id where a predicted voxel lies in a gt instance (``inside``),
        else one id per predicted instance and frame."""
        out = np.zeros_like(flat)
        for gt_id in np.unique(gt[inside]).tolist():
            out[inside & (gt == gt_id)] = self._id(('gt', gt_id))
        rest = (flat != 0) & ~inside
        for pred_id in np.unique(flat[rest]).tolist():
            out[rest & (flat == pred_id)] = self._id(('unmatched', frame, pred_id))
        return out
