"""TrackOcc detector: camera-only 4D panoptic occupancy tracking, trained on clips frame by
frame with track queries carried across frames, and run as a stream at inference."""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet3d.models.detectors import Base3DDetector
from trackocc.registry import MODELS
from trackocc.structures import (GRID_MAX, GRID_MIN, NUM_CLASSES, THING_CLASSES, VOXEL_SIZE,
                                 grid_geometry)
from trackocc.utils.device_constants import device_constant, to_device_async
from ..heads.instance_split import checked_connectivity
from ..heads.panoptic_merge import PanopticMerge
from ..layers.frame_grouped_norm import frame_groupable, frame_grouped_batch_norms
from ..losses.thing_targets import VELOCITY_SOURCES
from ..trackers import StreamState, TrackInstances, build_empty_tracks
from .autocast_scope import AUTOCAST_SCOPES, AutocastScope
from .clip_training import ClipTrainingMixin
from .query_budget import filler_rows, pad_queries, valid_rows
from .stream_inference import StreamInferenceMixin
from .tracking_steps import TrackCarry, TrackSettle

TRAIN_VISIBILITY = ('camera_and_infov', 'camera')
TRACK_ALIGNMENT = ('all_live', 'reference')
# the sub-networks of extract_feat: a frame's features depend on its own images and cameras
FEATURE_MODULES = ('img_backbone', 'img_neck', 'img_view_transformer',
                   'volume_encoder_backbone', 'volume_encoder_neck', 'occ_encoder')


@MODELS.register_module()
class TrackOcc(ClipTrainingMixin, StreamInferenceMixin, Base3DDetector):
    """TrackOcc (ICRA 2025) on MMEngine.

    Args:
        img_backbone, img_neck (dict): mmdet ResNet / FPN configs.
        img_view_transformer (dict): LSS view transformer with depth net and depth loss.
        volume_encoder_backbone, volume_encoder_neck (dict): 3D ResNet + 3D FPN.
        occ_encoder (dict): occupancy encoder -> compact_occ and mask_features.
        pts_bbox_head (dict): :class:`TrackOccHead` config (``thing_classes`` defaults to
            the detector's).
        track_criterion (dict): :class:`ClipMatcher` config.
        query_interaction (dict): :class:`QueryInteractionModule` config.
        memory_bank (dict, optional): :class:`MemoryBank` config (None disables it).
        tracker (dict): :class:`RuntimeTracker` config: the inference thresholds of track
            birth, miss, death and output (score 0.3, filter 0.25, miss tolerance 3).
        num_thing_queries (int): fresh thing queries per frame (200).
        embed_dims (int): E.
        num_classes (int): C (16; free = C - 1).
        thing_classes (list[int]): tracked classes ([1, 2, 4]).
        track_score_classes (list[int], optional): classes whose best sigmoid score is a
            query's track score (births, deaths, merge filter, false-positive choice); None
            = ``thing_classes``. The original scored tracks over its detector's default
            ``inst_class_ids`` [1, 2, 3, 4], which its config never set (class 3, sign,
            included); the _original-weights config sets that.
        grid_config (dict): occupancy grid ``x``, ``y``, ``z`` as (lower, upper, interval).
        time_interval (float): seconds between consecutive frames (0.5).
        with_velo (bool): velocity branch + velocity targets + velocity ref-point shift.
        score_threshold (float): panoptic merge class threshold (0.3).
        overlap_threshold (float): panoptic merge overlap threshold (0.7).
        merge_refill (bool): test-time ablation (not in the original): ``refill`` of the merge.
        instance_split_connectivity (int, optional): test-time ablation (not in the original,
            None = off): each merged instance keeps its largest 6- or 26-connected piece of
            predicted occupied voxels (:mod:`~trackocc.models.heads.instance_split`).
        piece_tracker (dict, optional): test-time ablation (not in the original, None = off):
            :class:`~trackocc.models.trackers.PieceTracker`, merged instances cut into
            connected pieces that are tracked.
        view_transformer_level (int): FPN level lifted by the view transformer (2 =
            stride 16).
        refiner (dict, optional): voxel refiner applied to ``mask_features`` at the voxels
            the head's semantic branch predicts occupied (e.g. ``SparseVoxelRefiner``,
            ``forward(feats (B, C, X, Y, Z), occupied (B, X, Y, Z) bool)``).
        train_visibility (str): voxels that count in training (mask BCE / dice, matching
            costs, stuff targets, semantic CE): ``'camera_and_infov'`` (the reference:
            ``mask_camera & infov``, the voxels the metric scores) or ``'camera'``
            (``mask_camera`` only).
        velocity_source (str): next-frame instances that give velocity targets, see
            :func:`build_thing_targets` (``'any_voxel'``, the reference, or
            ``'instance_table'``).
        autocast_scope (str): ``'reference'``: under AMP only the image encoder, the volume
            encoder and the occupancy encoder + head run in reduced precision, everything
            else in float32 (see :mod:`.autocast_scope`); ``'all'``: the caller's autocast
            covers the whole call.
        track_alignment (str): inference ego-motion alignment of the carried tracks:
            ``'all_live'`` aligns every track with an id (``obj_idx >= 0``);
            ``'reference'`` reproduces the original: tracks with ``obj_idx > 0`` are aligned
            and moved behind the others each frame (the track with id 0 keeps its
            reference point from the previous frame's ego frame).
        query_budget (int, optional): inference only: the head gets exactly this many thing
            query rows every frame (the fresh queries + the live tracks, padded, with a
            validity mask; the padding rows' outputs are dropped before tracking and the
            merge), so that its shapes do not depend on the number of live tracks (e.g. to
            replay it as a CUDA graph). More queries than the budget raise an error (no track
            is dropped). None (default): the head gets the queries as they are.
        fixed_track_rows (bool): inference under a ``query_budget``: the tracks keep the
            budget's row count from frame to frame (fresh queries, carried tracks, then
            filler rows without an id that the head, the tracker, the query interaction and
            the merge leave out), so the memory bank and query interaction run on fixed
            shapes too (e.g. compiled without recompiles, or captured). A frame then runs its
            tracking as two calls, each one CUDA graph in the fast path: ``track_carry``
            (:class:`TrackCarry`: the memory bank, the query interaction and the ego
            alignment; a sequence start from blank rows) and ``track_settle``
            (:class:`TrackSettle`: the tracker's update and the merge). The same tracks and
            predictions as without it. Defaults to False.
        fixed_rig_inputs (bool): inference: what depends only on the camera rig (the view
            transformer's bev_pool ranks, the occupancy encoder's camera points and query
            plan) is computed once per rig into fixed-size tensors at fixed addresses
            (:meth:`LSSViewTransformerBEVDepth.rig_ranks`,
            :meth:`OccupancyEncoder.rig_camera_queries`) and passed to those two modules as
            arguments, so that their CUDA graphs replay for every rig instead of capturing
            again at each one. The same predictions up to float rounding (the padded
            shapes). Defaults to False.
        anchor_track_modules (bool): training: add a zero-weight term over every parameter
            of the query interaction, the memory bank and the refiner to the losses
            (:func:`zero_weight_anchor`; values unchanged), so that every parameter gets a
            gradient in every iteration and DDP can run with
            ``find_unused_parameters=False`` (no graph walk after each forward pass). A clip
            without carried tracks then gives those parameters zero gradients instead of
            none (the optimizer's momentum and weight decay still step them). False (the
            reference): such a clip leaves them without gradients.
        clip_image_batch (bool): training: the image encoder (backbone + neck) runs once
            over the T frames of a clip instead of once per frame, when none of its layers
            depends on the batch (every batch norm in eval mode, as the paper config's
            ``norm_eval=True`` backbone; otherwise frame by frame, as the reference). The
            same features up to the convolutions' float rounding, T times fewer kernel
            launches for it in the forward and the backward pass. Defaults to True.
        clip_feature_batch (bool, optional): training: every feature network (image
            encoder, view transformer, volume and occupancy encoders) runs once over the T
            frames of a clip instead of once per frame, with each batch norm in training mode
            normalising each frame with that frame's own statistics
            (:func:`~trackocc.models.layers.frame_grouped_norm.frame_grouped_batch_norm`;
            running statistics as T updates in frame order). The losses and gradients of the
            frame-by-frame pass up to float rounding; dropout draws its masks for all frames
            at once (the same distribution, other draws). Falls back to ``clip_image_batch``
            with a refiner (its sparse batch norms see no frame order) or a batch norm that
            cannot be grouped (cumulative momentum, ``torch.nn.SyncBatchNorm``: the paper
            config's DDP wrapper makes them ``HostSyncFreeSyncBatchNorm``, which can).
            None (default): on an accelerator, whose iteration waits for kernel launches, and
            not on the CPU, where the frame-by-frame pass computes faster (tiny config on 2
            cores: 7.3 s per iteration against 10.0 s); True / False: always / never.
        use_gt_voxel_counts (bool): training: where a frame's ``gt_occ`` carries the
            ``voxel_counts`` that ``PackTrackOccInputs`` counts in the loader's workers, its
            visible voxels, stuff classes and instances with a voxel are sized by them (3
            host synchronisations a frame fewer on a GPU; checked on the device with the
            finite-loss check). False: always read from the device, as before.
        data_preprocessor (dict): ``TrackOccDataPreprocessor`` config.
    """

    def __init__(self,
                 img_backbone: dict,
                 img_neck: dict,
                 img_view_transformer: dict,
                 volume_encoder_backbone: dict,
                 volume_encoder_neck: dict,
                 occ_encoder: dict,
                 pts_bbox_head: dict,
                 track_criterion: dict = dict(type='ClipMatcher'),
                 query_interaction: dict = dict(type='QueryInteractionModule'),
                 memory_bank: Optional[dict] = dict(type='MemoryBank'),
                 tracker: dict = dict(type='RuntimeTracker', score_thresh=0.3,
                                      filter_score_thresh=0.25, miss_tolerance=3),
                 num_thing_queries: int = 200,
                 embed_dims: int = 256,
                 num_classes: int = NUM_CLASSES,
                 thing_classes: Sequence[int] = THING_CLASSES,
                 track_score_classes: Optional[Sequence[int]] = None,
                 grid_config: dict = dict(
                     zip('xyz', ((lo, hi, VOXEL_SIZE) for lo, hi in zip(GRID_MIN, GRID_MAX)))),
                 time_interval: float = 0.5,
                 with_velo: bool = True,
                 score_threshold: float = 0.3,
                 overlap_threshold: float = 0.7,
                 merge_refill: bool = False,
                 instance_split_connectivity: Optional[int] = None,
                 piece_tracker: Optional[dict] = None,
                 view_transformer_level: int = 2,
                 refiner: Optional[dict] = None,
                 train_visibility: str = 'camera_and_infov',
                 velocity_source: str = 'any_voxel',
                 autocast_scope: str = 'reference',
                 track_alignment: str = 'all_live',
                 query_budget: Optional[int] = None,
                 fixed_track_rows: bool = False,
                 fixed_rig_inputs: bool = False,
                 anchor_track_modules: bool = False,
                 clip_image_batch: bool = True,
                 clip_feature_batch: Optional[bool] = None,
                 use_gt_voxel_counts: bool = True,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if num_thing_queries < 1:
            raise ValueError(f'TrackOcc: num_thing_queries must be >= 1, got {num_thing_queries}')
        for name, value, allowed in (('train_visibility', train_visibility, TRAIN_VISIBILITY),
                                     ('velocity_source', velocity_source, VELOCITY_SOURCES),
                                     ('autocast_scope', autocast_scope, AUTOCAST_SCOPES),
                                     ('track_alignment', track_alignment, TRACK_ALIGNMENT)):
            if value not in allowed:
                raise ValueError(f'TrackOcc: {name} must be one of {allowed}, got {value!r}')
        self.train_visibility = train_visibility
        self.velocity_source = velocity_source
        self.autocast_scope = autocast_scope
        self.track_alignment = track_alignment
        self.occ_size, self.pc_range = grid_geometry(grid_config, 'TrackOcc')
        self.num_thing_queries = num_thing_queries
        self._fixed_track_rows = False
        self.query_budget = query_budget
        self.fixed_track_rows = fixed_track_rows
        self.fixed_rig_inputs = bool(fixed_rig_inputs)
        self.anchor_track_modules = anchor_track_modules
        self.clip_image_batch = bool(clip_image_batch)
        if clip_feature_batch not in (None, True, False):
            raise ValueError(f'TrackOcc: clip_feature_batch must be None, True or False, got '
                             f'{clip_feature_batch!r}')
        self.clip_feature_batch = clip_feature_batch
        self.use_gt_voxel_counts = bool(use_gt_voxel_counts)
        self.embed_dims = embed_dims
        self.num_classes = num_classes
        self.thing_classes = list(thing_classes)
        self.track_score_classes = list(thing_classes if track_score_classes is None
                                        else track_score_classes)
        if not self.track_score_classes or \
                any(not 0 <= c < num_classes for c in self.track_score_classes):
            raise ValueError(f'TrackOcc: track_score_classes must be classes in [0, '
                             f'{num_classes}), got {track_score_classes}')
        self.time_interval, self.with_velo = time_interval, with_velo
        self.score_threshold, self.overlap_threshold = score_threshold, overlap_threshold
        self.merge_refill = merge_refill
        self.instance_split_connectivity = checked_connectivity(instance_split_connectivity)
        self.view_transformer_level = view_transformer_level

        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck)
        self.img_view_transformer = MODELS.build(img_view_transformer)
        self.volume_encoder_backbone = MODELS.build(volume_encoder_backbone)
        self.volume_encoder_neck = MODELS.build(volume_encoder_neck)
        self.occ_encoder = MODELS.build(occ_encoder)
        # the tracked classes are stated once, on the detector
        self.pts_bbox_head = MODELS.build(
            dict(pts_bbox_head, thing_classes=pts_bbox_head.get('thing_classes',
                                                                 self.thing_classes)))
        self.refiner = MODELS.build(refiner) if refiner else None
        self.track_criterion = MODELS.build(track_criterion)
        self.query_interaction = MODELS.build(query_interaction)
        self.memory_bank = MODELS.build(memory_bank) if memory_bank else None
        self.tracker = MODELS.build(tracker)
        self.piece_tracker = MODELS.build(dict(piece_tracker, occ_size=self.occ_size,
                                               pc_range=self.pc_range)) if piece_tracker else None
        self.memory_len = self.memory_bank.memory_len if self.memory_bank else 0

        self.panoptic_merge = PanopticMerge()  # a stage of its own (e.g. for a CUDA graph)
        # fixed track rows: the tracking around the head as two calls (e.g. two CUDA graphs)
        self.track_carry = TrackCarry(self)
        self.track_settle = TrackSettle(self)
        self.query_embedding = nn.Embedding(num_thing_queries, 2 * embed_dims)
        self.reference_points = nn.Linear(embed_dims, 3)
        self._check_consistency()
        self._test_state: Optional[StreamState] = None
        self._stage_callbacks: Dict[int, Callable[[str, str], None]] = OrderedDict()
        self._merge_observers: Dict[int, Callable] = OrderedDict()

    def _check_consistency(self) -> None:
        """Clear errors for configs whose parts disagree on grid, classes or sizes."""
        head = self.pts_bbox_head
        problems = []

        def expect(name, got, want):
            if got is not None and got != want:
                problems.append(f'{name} is {got}, expected {want}')

        expect('pts_bbox_head.occ_size', tuple(head.occ_size), tuple(self.occ_size))
        expect('pts_bbox_head.pc_range', [round(v, 6) for v in head.pc_range],
               [round(v, 6) for v in self.pc_range])
        expect('pts_bbox_head.num_classes', head.num_classes, self.num_classes)
        expect('pts_bbox_head.thing_classes', head.thing_classes, self.thing_classes)
        expect('pts_bbox_head.embed_dims', head.embed_dims, self.embed_dims)
        expect('pts_bbox_head.with_velo', head.with_velo, self.with_velo)
        expect('track_criterion.num_classes', getattr(self.track_criterion, 'num_classes', None),
               self.num_classes)
        expect('query_interaction.embed_dims',
               getattr(self.query_interaction, 'embed_dims', None), self.embed_dims)
        if self.memory_bank is not None:
            expect('memory_bank.embed_dims', getattr(self.memory_bank, 'embed_dims', None),
                   self.embed_dims)
        vt_size = getattr(self.img_view_transformer, 'grid_size', None)
        expect('img_view_transformer.grid_size', tuple(vt_size) if vt_size else None,
               tuple(self.occ_size))
        expect('occ_encoder.embed_dims', getattr(self.occ_encoder, 'embed_dims', None),
               self.embed_dims)
        enc_range = getattr(self.occ_encoder, 'pc_range', None)
        expect('occ_encoder.pc_range', [round(v, 6) for v in enc_range] if enc_range else None,
               [round(v, 6) for v in self.pc_range])
        if self.with_velo and getattr(self.track_criterion, 'code_weights', None) is not None \
                and len(self.track_criterion.code_weights) < 6:
            problems.append('with_velo needs 6 track_criterion.code_weights')
        if self.refiner is not None and getattr(head, 'sem_head', None) is None:
            problems.append('refiner needs the semantic branch of pts_bbox_head '
                            '(sem_hidden_channels > 0) to find occupied voxels')
        if problems:
            raise ValueError('TrackOcc: inconsistent config: ' + '; '.join(problems))

    @property
    def query_budget(self) -> Optional[int]:
        """Fixed number of thing query rows of the head at inference (None: not fixed)."""
        return self._query_budget

    @query_budget.setter
    def query_budget(self, budget: Optional[int]) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or
                                   budget < self.num_thing_queries):
            raise ValueError(f'TrackOcc: query_budget must be None or an int >= '
                             f'num_thing_queries ({self.num_thing_queries}), got {budget!r}')
        if budget is None and self._fixed_track_rows:
            raise ValueError('TrackOcc: fixed_track_rows needs a query_budget (turn it off '
                             'first)')
        self._query_budget = budget

    @property
    def fixed_track_rows(self) -> bool:
        """Whether the tracks keep the query budget's row count at inference (see the
        class's ``fixed_track_rows``)."""
        return self._fixed_track_rows

    @fixed_track_rows.setter
    def fixed_track_rows(self, on: bool) -> None:
        if on and self._query_budget is None:
            raise ValueError('TrackOcc: fixed_track_rows needs a query_budget (the row count '
                             'the tracks keep)')
        self._fixed_track_rows = bool(on)

    def _fixed_rows(self) -> bool:
        """Whether this call keeps fixed track rows (inference only)."""
        return self._fixed_track_rows and not self.training

    # -- features ---------------------------------------------------------------------
    @staticmethod
    def _stack_meta(metas: List[dict], key: str, device) -> Tensor:
        try:
            arr = np.stack([np.asarray(m[key], dtype=np.float32) for m in metas])
        except KeyError:
            raise KeyError(f'TrackOcc: frame metainfo lacks `{key}` '
                           '(see docs/data_contract.md)') from None
        return to_device_async(arr, device)

    @staticmethod
    def _geometry_key(metas: List[dict]) -> bytes:
        """Bytes of the camera matrices of a batch (host-side, no device sync)."""
        return b''.join(np.ascontiguousarray(m[k], dtype=np.float32).tobytes()
                        for m in metas
                        for k in ('cam2img', 'lidar2cam', 'img_aug_matrix', 'lidar2img'))

    def extract_feat(self, imgs: Tensor, metas: List[dict],
                     amp: Optional[AutocastScope] = None,
                     img_feats: Optional[List[Tensor]] = None) -> Dict[str, Tensor]:
        """Features of one frame of B samples.

        Args:
            imgs (Tensor): (B, N, 3, H, W) normalized images.
            metas (list[dict]): B frame metainfos (``cam2img``, ``lidar2cam``,
                ``img_aug_matrix``, ``lidar2img``, each (N, 4, 4)).
            amp (AutocastScope, optional): mixed-precision regions of the call (default:
                the caller's autocast everywhere).
            img_feats (list[Tensor], optional): the image encoder's levels for these images,
                each (B*N, C, h, w), computed already (:meth:`clip_image_features`).

        Returns:
            dict(compact_occ (B, E, X', Y', Z'), mask_features (B, E, X, Y, Z) (refined
            when a refiner is configured), depth (B*N, D, h, w)).
        """
        amp = amp or AutocastScope('all', imgs.device.type)
        B, N = imgs.shape[:2]
        if img_feats is None:
            img_feats = amp.region(self._image_encoder, imgs.flatten(0, 1))
        mlvl = [f.view(B, N, *f.shape[1:]) for f in img_feats]
        cam_params = {k: self._stack_meta(metas, k, imgs.device)
                      for k in ('cam2img', 'lidar2cam', 'img_aug_matrix')}
        key = None if self.training else self._geometry_key(metas)
        rig_inputs = key is not None and self.fixed_rig_inputs
        if rig_inputs:  # the rig's ranks as arguments, the key out of the call's signature
            cam_params['ranks'] = self.img_view_transformer.rig_ranks(
                dict(cam_params, geometry_key=key))
        elif key is not None:  # a fixed rig reuses its bev_pool ranks from frame to frame
            cam_params['geometry_key'] = key
        volume, depth = self.img_view_transformer(mlvl[self.view_transformer_level], cam_params)
        compact, ms_volume = amp.region(self._volume_encoder, volume)
        lidar2img = self._stack_meta(metas, 'lidar2img', imgs.device)
        img_shape = tuple(imgs.shape[-2:])
        camera_queries = self.occ_encoder.rig_camera_queries(
            lidar2img, img_shape, key, compact.shape[2:]) if rig_inputs else None
        # the occupancy encoder opens the reference head's region, which goes on in
        # _run_head: its outputs keep the region's dtype (no float32 round trip in between)
        compact_occ, mask_features = amp.region(
            self._occupancy_features, mlvl, compact, ms_volume, lidar2img, img_shape,
            None if rig_inputs else key, camera_queries, cast_outputs=False)
        return dict(compact_occ=compact_occ, mask_features=mask_features, depth=depth)

    def _image_encoder(self, imgs: Tensor):
        """(B*N, 3, H, W) -> multi-level image features."""
        return self.img_neck(self.img_backbone(imgs))

    def image_encoder_batch_free(self) -> bool:
        """Whether no layer of the image encoder mixes the samples of its batch now (no
        batch norm in training mode, e.g. a ``norm_eval=True`` backbone)."""
        return not any(module.training and (isinstance(module, _BatchNorm)
                                            or 'BatchNorm' in type(module).__name__)
                       for part in (self.img_backbone, self.img_neck)
                       for module in part.modules())

    def clip_image_features(self, imgs: Tensor,
                            amp: AutocastScope) -> Optional[List[List[Tensor]]]:
        """Training: the image encoder once over a clip, (B, T, N, 3, H, W) -> per frame t
        its levels, each (B*N, C, h, w); None (frame by frame instead) without
        ``clip_image_batch``, for one frame, or when :meth:`image_encoder_batch_free` is
        False (the batch statistics of a batch norm would span the frames)."""
        B, T, N = imgs.shape[:3]
        if not self.clip_image_batch or T == 1 or not self.image_encoder_batch_free():
            return None
        levels = amp.region(self._image_encoder, imgs.transpose(0, 1).flatten(0, 2))
        per_frame = [f.view(T, B * N, *f.shape[1:]) for f in levels]
        return [[f[t] for f in per_frame] for t in range(T)]

    def _feature_modules(self) -> List[nn.Module]:
        return [getattr(self, name) for name in FEATURE_MODULES]

    def clip_features_batchable(self) -> bool:
        """Whether the feature networks can run once over a clip's frames now: no refiner,
        and every batch norm in training mode can be grouped by frame
        (:func:`frame_groupable`)."""
        return self.refiner is None and frame_groupable(self._feature_modules())

    def clip_features(self, imgs: Tensor, clips: List[list],
                      amp: AutocastScope) -> Optional[List[Dict[str, Tensor]]]:
        """Training: :meth:`extract_feat` once over a clip's frames, (B, T, N, 3, H, W) ->
        per frame t the dict of its B samples, with batch norms grouped by frame; None
        (frame by frame instead) when ``clip_feature_batch`` is off (False, or None with the
        images on the CPU), for one frame, or when not :meth:`clip_features_batchable`.

        Args:
            clips (list[list]): B clips of T frame data samples (their metainfo is read).
        """
        B, T = imgs.shape[:2]
        batched = self.clip_feature_batch
        if batched is None:
            batched = imgs.device.type != 'cpu'
        if not batched or T == 1 or not self.clip_features_batchable():
            return None
        metas = [clip[t].metainfo for t in range(T) for clip in clips]  # frame-major
        with frame_grouped_batch_norms(self._feature_modules(), T):
            feats = self.extract_feat(imgs.transpose(0, 1).flatten(0, 1), metas, amp)
        per_frame = {key: value.chunk(T) for key, value in feats.items()}
        return [{key: parts[t] for key, parts in per_frame.items()} for t in range(T)]

    def _volume_encoder(self, volume: Tensor):
        """Lifted volume -> (compact volume, multi-scale volumes)."""
        return self.volume_encoder_neck(self.volume_encoder_backbone(volume))

    def _occupancy_features(self, mlvl, compact, ms_volume, lidar2img, img_shape,
                            geometry_key, camera_queries=None):
        """Occupancy encoder (+ refiner) -> (compact_occ, mask_features)."""
        compact_occ, mask_features = self.occ_encoder(mlvl, compact, ms_volume, lidar2img,
                                                      img_shape, geometry_key=geometry_key,
                                                      camera_queries=camera_queries)
        if self.refiner is not None:
            with torch.no_grad():
                occupied = self.pts_bbox_head.semantic_logits(mask_features).argmax(1) != \
                    self.num_classes - 1
            mask_features = self.refiner(mask_features, occupied)
        return compact_occ, mask_features

    # -- tracks -----------------------------------------------------------------------
    def _empty_tracks(self) -> TrackInstances:
        query = self.query_embedding.weight
        ref_pts = self.reference_points(query[:, :self.embed_dims])
        return build_empty_tracks(query, ref_pts, self.num_classes,
                                  6 if self.with_velo else 3, self.memory_len)

    def _run_head(self, tracks: TrackInstances, compact_occ: Tensor,
                  mask_features: Tensor) -> Dict:
        """The head's outputs for the thing queries of ``tracks`` (one sample); at inference
        with a :attr:`query_budget` the head runs on the queries padded to the budget
        (:func:`~.query_budget.pad_queries`) and the padding rows' outputs are dropped, except
        for the merge: ``budget_thing_cls`` / ``budget_thing_masks``, the last layer's class
        and mask logits of all budget rows (fixed shapes, see :meth:`merge_inputs`)."""
        query, ref_pts = tracks.query, tracks.ref_pts.sigmoid()
        if self.query_budget is None or self.training:
            return self.pts_bbox_head(query[None], ref_pts[None], compact_occ, mask_features)
        if self._fixed_rows():  # already the budget's rows; every output row is kept
            valid = ~filler_rows(tracks.obj_idxes, self.num_thing_queries)
            out = self.pts_bbox_head(query[None], ref_pts[None], compact_occ, mask_features,
                                     valid[None])
            return dict(out, budget_thing_cls=out['thing_cls'][-1],
                        budget_thing_masks=out['thing_masks'][-1])
        num = len(tracks)
        query, ref_pts, valid = pad_queries(query, ref_pts, self.query_budget,
                                            self.num_thing_queries)
        out = self.pts_bbox_head(query[None], ref_pts[None], compact_occ, mask_features,
                                 valid[None])
        rows = {k: valid_rows(v, num) if k.startswith('thing_') else v for k, v in out.items()}
        return dict(rows, budget_thing_cls=out['thing_cls'][-1],
                    budget_thing_masks=out['thing_masks'][-1])

    def _record_frame(self, tracks: TrackInstances, out: Dict) -> None:
        """Store the final-layer predictions of one sample (batch index 0 of ``out``)."""
        cls = out['thing_cls'][-1][0]
        with torch.no_grad():
            things = device_constant(self.track_score_classes, cls.device, torch.long)
            tracks.scores = cls[:, things].sigmoid().max(-1)[0]
        tracks.pred_logits = cls.detach()
        tracks.pred_centers = out['thing_centers'][-1][0].detach()
        tracks.output_embedding = out['thing_embed'][0]

    def _velocity(self, centers: Tensor) -> Optional[Tensor]:
        return centers[:, 3:6] if self.with_velo else None

    def _next_frame_queries(self, tracks: TrackInstances,
                            active_index: Optional[Tensor] = None,
                            with_filler: bool = False,
                            inactive_index: Optional[Tensor] = None) -> TrackInstances:
        """The next frame's queries from the tracks a frame ended with, in training and
        inference: the memory bank, then the fresh queries followed by the active tracks
        updated by the query interaction module (``active_index`` / ``inactive_index``: the
        active and the other tracks' positions when known, see
        :meth:`QueryInteractionModule.select_active_tracks`; ``with_filler``: it also
        selects filler rows, :attr:`fixed_track_rows`)."""
        if self.memory_bank is not None:
            tracks = self.memory_bank(tracks)
        return self.query_interaction(tracks, self._empty_tracks(), active_index=active_index,
                                      with_filler=with_filler, inactive_index=inactive_index)

    def _forward(self, inputs: dict, data_samples: Optional[list] = None) -> Dict:
        """Tensor mode: head outputs of the first frame with fresh queries."""
        imgs = inputs['imgs']
        if data_samples is None:
            raise ValueError('TrackOcc._forward needs data_samples for the camera parameters')
        metas = [ds.video_data_samples[0].metainfo for ds in data_samples]
        amp = AutocastScope(self.autocast_scope, imgs.device.type)
        with amp.outside():
            feats = self.extract_feat(imgs[:, 0], metas, amp)
            tracks = self._empty_tracks()
            B = imgs.shape[0]
            return amp.region(self.pts_bbox_head, tracks.query[None].expand(B, -1, -1),
                              tracks.ref_pts.sigmoid()[None].expand(B, -1, -1),
                              feats['compact_occ'], feats['mask_features'])
