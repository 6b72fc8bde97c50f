"""Per-query track state carried from frame to frame (MOTR-style track instances)."""
from typing import Optional

import torch
from mmengine.structures import InstanceData
from torch import Tensor

# Fields every track instance set holds (Q queries, E embed dims, L memory length, C classes).
TRACK_FIELDS = (
    'query',             # (Q, 2E) float: [positional | content] query embedding
    'ref_pts',           # (Q, 3) float: inverse-sigmoid of the normalized grid reference point
    'output_embedding',  # (Q, E) float: decoder output of the last frame
    'obj_idxes',         # (Q,) long: track id (gt instance id when training), -1 = none
    'matched_gt_idxes',  # (Q,) long: index into the frame's gt instances, -1 = none (training)
    'disappear_time',    # (Q,) long: misses since the last confident frame (inference)
    'scores',            # (Q,) float: max sigmoid score over the thing classes
    'pred_logits',       # (Q, C) float: class logits of the last frame
    'pred_centers',      # (Q, 3 or 6) float: metric centre (x, y, z) [+ velocity (vx, vy, vz)]
    'mem_bank',          # (Q, L, E) float: memory of past output embeddings
    'mem_padding_mask',  # (Q, L) bool: True where the memory slot is empty
    'save_period',       # (Q,) float: frames until the memory bank may save again (inference)
)


class TrackInstances(InstanceData):
    """:class:`mmengine.structures.InstanceData` holding the fields of
    :data:`TRACK_FIELDS`; indexing with a bool/long tensor and
    :meth:`InstanceData.cat` keep every field aligned."""

    def copy_tensors(self) -> 'TrackInstances':
        """A new element with a copy of every tensor field (``clone()`` of mmengine's data
        elements shares the tensors)."""
        out = self.__class__(metainfo=dict(self.metainfo_items()))
        for key, value in self.items():
            out.set_field(value.clone() if isinstance(value, torch.Tensor) else value, key)
        return out

    def __getitem__(self, item) -> 'TrackInstances':
        """Bool masks become one index vector first: InstanceData would index every field
        with the mask, one host synchronisation (nonzero) per field on CUDA."""
        if isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            if item.dim() != 1 or len(item) != len(self):
                raise IndexError(f'TrackInstances: bool mask of shape {tuple(item.shape)} for '
                                 f'{len(self)} tracks')
            item = torch.nonzero(item, as_tuple=True)[0]
        return super().__getitem__(item)


def build_empty_tracks(query: Tensor,
                       ref_pts: Tensor,
                       num_classes: int,
                       center_dims: int = 6,
                       memory_len: int = 4) -> TrackInstances:
    """Fresh (unassigned) track instances from learned query embeddings.

    Args:
        query (Tensor): (Q, 2E) query embedding, positional half first.
        ref_pts (Tensor): (Q, 3) reference points in inverse-sigmoid space.
        num_classes (int): C, number of classes of the class logits.
        center_dims (int): 3 (centre) or 6 (centre + velocity).
        memory_len (int): L, memory bank length (0 disables it).

    Returns:
        TrackInstances with Q entries, obj_idxes = -1.
    """
    if query.dim() != 2 or query.shape[1] % 2:
        raise ValueError(f'query must be (Q, 2E), got {tuple(query.shape)}')
    if ref_pts.shape != (query.shape[0], 3):
        raise ValueError(f'ref_pts must be (Q, 3), got {tuple(ref_pts.shape)}')
    num, dim = query.shape[0], query.shape[1] // 2
    device = query.device
    tracks = TrackInstances()
    tracks.query = query
    tracks.ref_pts = ref_pts
    tracks.output_embedding = query.new_zeros(num, dim)
    tracks.obj_idxes = torch.full((num, ), -1, dtype=torch.long, device=device)
    tracks.matched_gt_idxes = torch.full((num, ), -1, dtype=torch.long, device=device)
    tracks.disappear_time = torch.zeros(num, dtype=torch.long, device=device)
    tracks.scores = query.new_zeros(num)
    tracks.pred_logits = query.new_zeros(num, num_classes)
    tracks.pred_centers = query.new_zeros(num, center_dims)
    tracks.mem_bank = query.new_zeros(num, memory_len, dim)
    tracks.mem_padding_mask = torch.ones(num, memory_len, dtype=torch.bool, device=device)
    tracks.save_period = query.new_zeros(num)
    return tracks


def cat_tracks(*tracks: Optional[TrackInstances]) -> TrackInstances:
    """Concatenate non-empty track instance sets (keeps the order given)."""
    parts = [t for t in tracks if t is not None and len(t) > 0]
    if not parts:
        return tracks[0]
    if len(parts) == 1:
        return parts[0]
    return TrackInstances.cat(parts)
