"""Pack a clip (dict of per-frame lists) into ``inputs`` + a ``TrackDataSample`` of frames."""
from typing import Sequence

import numpy as np
import torch
from mmdet3d.datasets.transforms import Pack3DDetInputs
from trackocc.registry import TRANSFORMS

from ...structures.clip_data_sample import ClipDataSample
from ...structures.occ_data_sample import OCC_FIELDS, OccDataSample, OccupancyData
from ...structures.occ_voxel_counts import (COUNTED_FIELDS, VOXEL_COUNTS_KEY,
                                            occupancy_voxel_counts)

FLOAT32_META = ('cam2img', 'lidar2cam', 'img_aug_matrix', 'lidar2img')
FLOAT64_META = ('ego2global', )
DEFAULT_META_KEYS = ('sample_idx', 'sequence_id', 'frame_idx', 'timestamp', 'start_of_sequence',
                     'ego2global', 'cam2img', 'lidar2cam', 'img_aug_matrix', 'lidar2img',
                     'img_shape', 'ori_shape', 'num_views', 'cam_names',
                     'img_path', 'lidar_path', 'occ_path', 'img_aug_params', 'box_type_3d',
                     'box_mode_3d')


@TRANSFORMS.register_module()
class PackTrackOccInputs(Pack3DDetInputs):
    """Pack a clip into ``dict(inputs=dict(img=uint8 (T, N, 3, H, W)), data_samples=...)``.

    ``results`` maps every key to a list over the T frames (as built by
    :class:`WaymoTrackOccDataset` and kept by ``TransformBroadcaster``). Each frame is packed
    by :class:`mmdet3d.datasets.transforms.Pack3DDetInputs` into a ``Det3DDataSample`` (so its
    keys such as ``points`` / ``gt_bboxes_3d`` still work), turned into an
    :class:`~trackocc.structures.OccDataSample`, and gets, when present:

    - ``gt_occ``: :class:`~trackocc.structures.OccupancyData` with ``semantics``,
      ``instances``, ``instance_ids``, ``instance_labels`` int64 and ``mask_camera``,
      ``mask_lidar``, ``infov`` bool tensors, and in its metainfo ``voxel_counts`` (the
      sizes the training losses would otherwise read back from the device,
      :mod:`trackocc.structures.occ_voxel_counts`; counted here, in the loader's workers);
    - ``gt_depth``: float32 tensor (N, H, W).

    Metainfo follows ``docs/data_contract.md`` (camera matrices float32 (N, 4, 4), ego poses
    float64 (4, 4)). The frames go into a :class:`ClipDataSample` (an mmdet
    ``TrackDataSample``); its metainfo holds ``key_frames_inds`` (all frames) and
    ``ref_frames_inds`` (none).

    Args:
        keys (sequence[str]): Keys to pack; ``gt_occ`` and ``gt_depth`` are handled here, the
            rest by ``Pack3DDetInputs`` (``img``, ``points``, ``gt_bboxes_3d``...).
        meta_keys (sequence[str]): Per-frame metainfo keys (missing ones are skipped).
    """

    OWN_KEYS = ('gt_occ', 'gt_depth')

    def __init__(self, keys: Sequence[str] = ('img', 'gt_occ', 'gt_depth'),
                 meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        super().__init__(keys=tuple(k for k in keys if k not in self.OWN_KEYS),
                         meta_keys=tuple(meta_keys))
        self.own_keys = tuple(k for k in keys if k in self.OWN_KEYS)

    def transform(self, results: dict) -> dict:
        if not isinstance(results, dict) or not results:
            raise TypeError(f'{type(self).__name__} expects a dict of per-frame lists')
        lengths = {len(v) if isinstance(v, (list, tuple)) else -1 for v in results.values()}
        if len(lengths) != 1 or lengths == {-1}:
            raise ValueError(f'{type(self).__name__}: every value must be a list with one entry '
                             f'per frame (run per-frame transforms in TransformBroadcaster); '
                             f'got lengths {sorted(lengths)}')
        num_frames = lengths.pop()
        frames = [self.pack_single_results({k: v[t] for k, v in results.items()})
                  for t in range(num_frames)]
        inputs = {}
        for key in frames[0]['inputs']:
            values = [f['inputs'][key] for f in frames]
            inputs[key] = torch.stack(values) if key == 'img' else values
        track_sample = ClipDataSample()
        track_sample.video_data_samples = [f['data_samples'] for f in frames]
        track_sample.set_metainfo(dict(key_frames_inds=list(range(num_frames)),
                                       ref_frames_inds=[]))
        return dict(inputs=inputs, data_samples=track_sample)

    def pack_single_results(self, results: dict) -> dict:
        """Pack one frame: ``Pack3DDetInputs`` (as an ``OccDataSample``) plus ``gt_occ`` /
        ``gt_depth``."""
        if isinstance(results.get('img'), list):
            shapes = {img.shape for img in results['img']}
            if len(shapes) > 1:
                raise ValueError(f'{type(self).__name__}: camera images of sample '
                                 f'{results.get("sample_idx")} differ in size {sorted(shapes)}; '
                                 'resize them (MultiViewImageAugmentation) before packing')
        packed = super().pack_single_results(results)
        det_sample = packed['data_samples']
        sample = OccDataSample(metainfo=det_sample.metainfo)
        sample.set_data({key: det_sample.get(key) for key in det_sample.keys()})
        packed['data_samples'] = sample
        meta = {}
        for key in FLOAT32_META:
            if key in sample.metainfo:
                meta[key] = np.asarray(sample.metainfo[key], dtype=np.float32)
        for key in FLOAT64_META:
            if key in sample.metainfo:
                meta[key] = np.asarray(sample.metainfo[key], dtype=np.float64)
        shape = sample.metainfo.get('img_shape')
        if shape is not None and len(shape) and not np.isscalar(shape[0]):
            shape = shape[0]  # per-camera list of equal shapes (checked above)
        if shape is not None:
            meta['img_shape'] = tuple(int(x) for x in shape[:2])
        sample.set_metainfo(meta)
        if 'gt_occ' in self.own_keys and 'gt_occ' in results:
            occ = results['gt_occ']
            sample.gt_occ = OccupancyData(**{k: torch.as_tensor(np.asarray(occ[k]))
                                             for k in OCC_FIELDS if k in occ})
            if all(k in occ for k in COUNTED_FIELDS):
                sample.gt_occ.set_metainfo({VOXEL_COUNTS_KEY: occupancy_voxel_counts(
                    *(occ[k] for k in COUNTED_FIELDS))})
        if 'gt_depth' in self.own_keys and 'gt_depth' in results:
            sample.gt_depth = torch.as_tensor(np.asarray(results['gt_depth'], dtype=np.float32))
        return packed

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(keys={self.keys + self.own_keys}, '
                f'meta_keys={self.meta_keys})')
