"""TrackOcc-Waymo dataset: frames of the released layout served as clips (train) or a stream (test).

Layout and info-pkl fields: ``docs/data_contract.md``. One *frame* is one entry of the info pkl
that survives ``load_interval``; one *item* of the dataset is

- training (``test_mode=False``): a clip of ``num_frames_per_sample`` consecutive kept frames of
  one sequence (clips never cross a sequence boundary);
- testing (``test_mode=True``): a single kept frame; items are in stream order (sequence by
  sequence, frames ascending), so a model can carry its track state from item to item.

``prepare_data`` hands the pipeline a *clip dict*: every key maps to a list with one value per
frame (mmdet's video convention), so the per-frame transforms run inside mmcv's
``TransformBroadcaster`` and ``PackTrackOccInputs`` turns the lists into one ``TrackDataSample``.

Two indices, never mixed: an *item* index ``idx`` in ``range(len(dataset))`` (clips or frames,
see above; ``__getitem__``, :meth:`get_clip_info`, :meth:`get_item_frames`) and a *frame*
index in ``range(dataset.num_frames)``, the position among the kept, stream-ordered frames
(:meth:`get_frame_info`; mmengine's ``get_data_info`` takes it too, as ``data_list`` holds
frames). ``frame_idx`` in a frame's info is something else again: the frame number within its
sequence, decoded from ``sample_idx``.
"""
import copy
import os.path as osp
import pickle
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from mmdet3d.datasets import Det3DDataset
from trackocc.registry import DATASETS
from mmengine.dataset.base_dataset import force_full_init
from mmengine.fileio import exists, load
from mmengine.logging import print_log

from ..structures.cameras import CAMERA_FOLDERS, CAMERA_NAMES
from ..structures.occ_classes import BOX_LABEL_TO_OCC, OCC_CLASS_NAMES, THING_CLASSES
from ..structures.occ_npz import OCC_DIR, OCC_FILE_TEMPLATE
from ..structures.sample_index import SPLITS, split_sample_idx

_REQUIRED_FRAME_KEYS = ('sample_idx', 'timestamp', 'ego2global', 'images')


@DATASETS.register_module()
class WaymoTrackOccDataset(Det3DDataset):
    """Waymo panoptic occupancy tracking data (TrackOcc release layout).

    Args:
        data_root (str): Root joined to ``ann_file`` and every ``data_prefix``.
        ann_file (str): Info pkl (mmdet3d 1.x format, ``dict(metainfo, data_list)``).
        data_prefix (dict): Folder per camera name (``CAM_FRONT``...), ``pts`` (LiDAR ``.bin``)
            and ``occ`` (``pano_voxel04/training`` or ``.../validation``).
        pipeline (list): Transforms; they receive the clip dict described in the module doc.
        load_interval (int): Keep frames whose frame index is a multiple of it (5 in the paper:
            0.5 s between kept frames).
        num_frames_per_sample (int): Clip length T when training. Testing always uses T = 1.
        frame_interval (int): Step, in kept frames, between the frames of a training clip.
        clip_stride (int): Step, in kept frames, between the first frames of consecutive clips
            of one sequence (1: a clip starts at every kept frame, as the reference).
        thing_classes (sequence[int]): Occupancy class ids tracked as instances.
        filter_empty_gt (bool): When training, drop (and re-draw) clips in which some frame has
            no visible thing instance, as the reference does. Ignored in test mode.
        sequences (sequence[int], optional): Keep only these ``sequence_id`` values.
        occ_file_template (str): Occupancy file under ``data_prefix['occ']``, formatted with
            ``seq`` and ``frame``.
        modality (dict): ``use_camera`` / ``use_lidar`` (LiDAR paths are only joined if set).
        **kwargs: Passed to :class:`mmdet3d.datasets.Det3DDataset` (``metainfo``,
            ``test_mode``, ``serialize_data``, ``indices``, ``backend_args``...).
    """

    METAINFO = dict(classes=OCC_CLASS_NAMES, thing_classes=THING_CLASSES)

    def __init__(self,
                 data_root: str,
                 ann_file: str,
                 data_prefix: Optional[dict] = None,
                 pipeline: List[Union[dict, Callable]] = [],
                 load_interval: int = 1,
                 num_frames_per_sample: int = 3,
                 frame_interval: int = 1,
                 clip_stride: int = 1,
                 thing_classes: Sequence[int] = THING_CLASSES,
                 filter_empty_gt: bool = False,
                 sequences: Optional[Sequence[int]] = None,
                 occ_file_template: str = OCC_FILE_TEMPLATE,
                 modality: dict = dict(use_camera=True, use_lidar=True),
                 load_eval_anns: bool = False,
                 **kwargs) -> None:
        for name, value in (('load_interval', load_interval),
                            ('num_frames_per_sample', num_frames_per_sample),
                            ('frame_interval', frame_interval), ('clip_stride', clip_stride)):
            if int(value) < 1:
                raise ValueError(f'{type(self).__name__}: {name} must be >= 1, got {value}')
        if data_prefix is None:
            data_prefix = dict(pts='kitti_format/training/velodyne',
                               occ=f'{OCC_DIR}/{SPLITS[0]}',
                               **{cam: f'kitti_format/training/{CAMERA_FOLDERS[cam]}'
                                  for cam in CAMERA_NAMES})
        if 'occ' not in data_prefix:
            raise KeyError(f"{type(self).__name__}: data_prefix needs an 'occ' entry "
                           "(e.g. 'pano_voxel04/training')")
        self.load_interval = int(load_interval)
        self.num_frames_per_sample = int(num_frames_per_sample)
        self.frame_interval = int(frame_interval)
        self.clip_stride = int(clip_stride)
        self.thing_classes = tuple(int(c) for c in thing_classes)
        self.sequences = None if sequences is None else {int(s) for s in sequences}
        self.occ_file_template = occ_file_template
        metainfo = dict(kwargs.pop('metainfo', None) or {})
        metainfo.setdefault('thing_classes', self.thing_classes)
        super().__init__(data_root=data_root, ann_file=ann_file, metainfo=metainfo,
                         data_prefix=data_prefix, pipeline=pipeline, modality=dict(modality),
                         filter_empty_gt=filter_empty_gt, load_eval_anns=load_eval_anns,
                         **kwargs)

    # ------------------------------------------------------------------ loading
    def load_data_list(self) -> List[dict]:
        """Read the info pkl, keep every ``load_interval``-th frame, sort in stream order."""
        name = type(self).__name__
        if not exists(self.ann_file, backend_args=self.backend_args):
            raise FileNotFoundError(f'{name}: annotation file {self.ann_file} does not exist')
        try:
            annotations = load(self.ann_file, backend_args=self.backend_args)
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
                ImportError, IndexError, KeyError, MemoryError, OSError) as err:
            raise ValueError(
                f'{name}: cannot read annotation file {self.ann_file} '
                f'(truncated or corrupt pickle?): {type(err).__name__}: {err}') from err
        if not isinstance(annotations, dict) or 'data_list' not in annotations:
            raise ValueError(f'{name}: annotation file {self.ann_file} must hold '
                             f'dict(metainfo=..., data_list=[...]), got {type(annotations)}')
        for key, value in (annotations.get('metainfo') or {}).items():
            self._metainfo.setdefault(key, value)
        data_list = []
        for pos, raw in enumerate(annotations['data_list']):
            missing = [k for k in _REQUIRED_FRAME_KEYS if not isinstance(raw, dict) or k not in raw]
            if missing:
                raise ValueError(f'{name}: frame #{pos} of {self.ann_file} lacks {missing}')
            index = split_sample_idx(raw['sample_idx'])
            if index.frame % self.load_interval != 0:
                continue
            if self.sequences is not None and index.sequence_id not in self.sequences:
                continue
            data_list.append(self.parse_data_info(raw))
        data_list.sort(key=lambda info: info['sample_idx'])
        if not data_list:
            raise ValueError(f'{name}: no frame of {self.ann_file} is left after '
                             f'load_interval={self.load_interval} / sequences filtering')
        return data_list

    def parse_data_info(self, info: dict) -> dict:
        """Join file prefixes and add ``sequence_id``, ``frame_idx``, ``occ_path``."""
        missing = [cam for cam in CAMERA_NAMES
                   if cam in self.data_prefix and cam not in info['images']]
        if missing:
            raise KeyError(f'{type(self).__name__}: frame {info["sample_idx"]} of '
                           f'{self.ann_file} has no image entry for {missing}')
        info = super().parse_data_info(info)
        self._count_instances(info)
        index = split_sample_idx(info['sample_idx'])
        info['sample_idx'] = int(info['sample_idx'])
        info['sequence_id'] = index.sequence_id
        info['frame_idx'] = index.frame
        info['timestamp'] = float(info['timestamp']) / 1e6
        info['ego2global'] = np.asarray(info['ego2global'], dtype=np.float64)
        info['occ_path'] = osp.join(self.data_prefix['occ'],
                                    self.occ_file_template.format(seq=index.seq,
                                                                  frame=index.frame))
        return info

    def parse_ann_info(self, info: dict) -> dict:
        """3D boxes of ``cam_sync_instances`` (LiDAR frame; not used by the occupancy model).

        Returns dict(gt_bboxes_3d (K, 7) float32, gt_labels_3d (K,) int64 box categories as
        stored in the pkl (mmdet3d Waymo: Car 0, Pedestrian 1, Cyclist 2, ...; not occupancy
        class ids), instance_ids (K,) int64).
        """
        instances = info.get('cam_sync_instances') or []
        boxes = np.asarray([inst['bbox_3d'] for inst in instances],
                           dtype=np.float32).reshape(-1, 7)
        labels = np.asarray([inst['bbox_label_3d'] for inst in instances], dtype=np.int64)
        ids = np.asarray([inst.get('instance_id', -1) for inst in instances], dtype=np.int64)
        return dict(gt_bboxes_3d=boxes, gt_labels_3d=labels, instance_ids=ids)

    def _count_instances(self, info: dict) -> None:
        """Add the frame's ``cam_sync_instances`` boxes to ``num_ins_per_cat`` (occupancy
        classes), the "number of instances per category" table Det3DDataset logs; in test
        mode too, where ``parse_ann_info`` is not called."""
        for inst in info.get('cam_sync_instances') or []:
            occ_label = BOX_LABEL_TO_OCC.get(int(inst.get('bbox_label_3d', -1)), -1)
            if 0 <= occ_label < len(self.num_ins_per_cat):
                self.num_ins_per_cat[occ_label] += 1

    def full_init(self) -> None:
        """Load frames, then index sequences and clips (before frames get serialized)."""
        if self._fully_initialized:
            return
        self.data_list = self.load_data_list()
        self.data_list = self.filter_data()
        if self._indices is not None:
            self.data_list = self._get_unserialized_subset(self._indices)
        self._build_index(self.data_list)
        if self.serialize_data:
            self.data_bytes, self.data_address = self._serialize_data()
        self._fully_initialized = True

    def _build_index(self, frames: List[dict]) -> None:
        """Per-frame sequence bookkeeping and the list of items (clips or frames)."""
        self.frame_sequence_ids = np.array([f['sequence_id'] for f in frames], dtype=np.int64)
        starts = np.ones(len(frames), dtype=bool)
        starts[1:] = self.frame_sequence_ids[1:] != self.frame_sequence_ids[:-1]
        self.frame_start_of_sequence = starts
        seq_starts = np.flatnonzero(starts)
        seq_ends = np.append(seq_starts[1:], len(frames))
        if self.test_mode:
            self._items = np.arange(len(frames), dtype=np.int64)[:, None]
        else:
            span = (self.num_frames_per_sample - 1) * self.frame_interval
            clips = []
            for begin, end in zip(seq_starts, seq_ends):
                for first in range(begin, end - span, self.clip_stride):
                    clips.append(range(first, first + span + 1, self.frame_interval))
            if not clips:
                raise ValueError(
                    f'{type(self).__name__}: no sequence of {self.ann_file} has '
                    f'{span + 1} kept frames for a clip of {self.num_frames_per_sample} frames '
                    f'(load_interval={self.load_interval}, frame_interval={self.frame_interval})')
            short = int(np.sum(seq_ends - seq_starts <= span))
            if short:
                print_log(f'{short} sequence(s) shorter than one clip give no training clip',
                          logger='current')
            self._items = np.array([list(c) for c in clips], dtype=np.int64)
        self.item_sequence_ids = self.frame_sequence_ids[self._items[:, 0]]
        # position of an item's first frame inside its sequence (in kept frames)
        seq_begin = np.maximum.accumulate(np.where(starts, np.arange(len(frames)), 0))
        self.item_positions = self._items[:, 0] - seq_begin[self._items[:, 0]]

    @force_full_init
    def __len__(self) -> int:
        return len(self._items)

    @property
    @force_full_init
    def num_frames(self) -> int:
        """Number of kept frames (``len(self)`` counts items: clips when training)."""
        return len(self.frame_sequence_ids)

    @force_full_init
    def get_item_frames(self, idx: int) -> List[int]:
        """Frame indices (positions among the kept, sorted frames) of item ``idx``."""
        return [int(i) for i in self._items[idx]]

    @force_full_init
    def get_frame_info(self, frame: int) -> dict:
        """A copy of the info of kept frame ``frame`` (a frame index, not an item index)."""
        frame = int(frame)
        if not 0 <= frame < self.num_frames:
            raise IndexError(f'{type(self).__name__}: frame index {frame} outside '
                             f'[0, {self.num_frames}) (items are indexed by __getitem__)')
        if self.serialize_data:
            start = 0 if frame == 0 else self.data_address[frame - 1].item()
            end = self.data_address[frame].item()
            return pickle.loads(memoryview(self.data_bytes[start:end]))
        return copy.deepcopy(self.data_list[frame])

    def get_data_info(self, idx: int) -> dict:
        """mmengine's accessor of ``data_list``, which holds frames: the same as
        :meth:`get_frame_info` (``idx`` is a frame index; for item ``idx`` use
        :meth:`get_clip_info`)."""
        return self.get_frame_info(idx)

    def _frame_results(self, frame: int) -> dict:
        info = self.get_frame_info(frame)
        info['start_of_sequence'] = bool(self.frame_start_of_sequence[frame])
        info['box_type_3d'] = self.box_type_3d
        info['box_mode_3d'] = self.box_mode_3d
        return info

    @force_full_init
    def get_clip_info(self, idx: int) -> Dict[str, list]:
        """The clip dict of item ``idx``: every key maps to a list over its frames."""
        frames = [self._frame_results(i) for i in self.get_item_frames(idx)]
        keys = list(frames[0])
        return {key: [frame.get(key) for frame in frames] for key in keys}

    def prepare_data(self, idx: int) -> Optional[dict]:
        """Run the pipeline on item ``idx``; None (redraw) for thing-less clips if filtering."""
        example = self.pipeline(self.get_clip_info(idx))
        if example is None or self.test_mode or not self.filter_empty_gt:
            return example
        for frame in example['data_samples'].video_data_samples:
            if 'gt_occ' in frame and len(frame.gt_occ.instance_ids) == 0:
                return None
        return example
