"""Occupancy encoder: enhances the compact volume with attention and builds the mask features.

Port of the reference ``TransformerMSOcc`` / ``OccEncoder`` / ``OccFormerLayer`` and of
``TrackOccHead.enhance_occ_feature``:

1. compact volume (B, C_t, X, Y, Z) -> 1x1x1 conv to E -> voxel queries (B, X*Y*Z, E) with a
   learned 3D positional encoding;
2. ``num_layers`` x :class:`OccupancyEncoderLayer` (3D deformable self-attention around each
   voxel centre, spatial cross-attention to the multi-scale image features at the voxel
   centre's projection in every camera, FFN);
3. 1x1x1 conv back to C_t, concatenation with the input compact volume, 3x3x3 conv-ReLU
   (the enhanced compact volume), then
   - a 1x1x1 conv to E: ``compact_occ`` (B, E, X, Y, Z), the value of the mask decoder's
     deformable cross-attention (the reference head's ``compact_proj``), and
   - :class:`MaskFeatureUpsampler`: ``mask_features`` (B, E, 4X, 4Y, Z).
"""
import functools
import math
from typing import Hashable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule, ModuleList
from trackocc.registry import MODELS
from trackocc.structures import PC_RANGE
from trackocc.utils.device_constants import device_constant
from trackocc.utils.rig_inputs import RigInputs

from .mask_feature_upsampler import MaskFeatureUpsampler
from .occupancy_encoder_layer import OccupancyEncoderLayer
from .positional_encoding_3d import LearnedPositionalEncoding3D
from .sliced_conv3d import SlicedConv3d
from .spatial_cross_attention import (CameraQueryPlan, plan_camera_queries,
                                      project_points_to_images)


def voxel_centres(shape: Sequence[int], pc_range: Sequence[float],
                  device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centres of a (X, Y, Z) grid over ``pc_range`` (x0, y0, z0, x1, y1, z1).

    Returns:
        metric (X*Y*Z, 3) ego coordinates and normalized (X*Y*Z, 3) in (0, 1), both
        flattened with X slowest (the order of ``volume.flatten(2)``).
    """
    return _voxel_centres(tuple(int(n) for n in shape), tuple(float(v) for v in pc_range),
                          str(torch.device(device if device is not None else 'cpu')))


@functools.lru_cache(maxsize=16)
def _voxel_centres(shape, pc_range, device):  # constant per grid: built once (read-only)
    axes = [(torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1).reshape(-1, 3)
    lower = device_constant(pc_range[:3], device)
    upper = device_constant(pc_range[3:], device)
    return lower + grid * (upper - lower), grid


@MODELS.register_module()
class OccupancyEncoder(BaseModule):
    """Compact-volume encoder and full-resolution mask-feature builder.

    Args:
        in_channels (int): C_t of the compact and multi-scale volume features (paper 32).
        embed_dims (int): E (paper 256); also the image-feature channels.
        num_cams (int): cameras N (5), for the learned camera embeddings.
        num_feature_levels (int): image feature levels L (4).
        num_layers (int): encoder layers (1).
        pc_range (Sequence[float]): (x0, y0, z0, x1, y1, z1) covered by the compact volume
            (paper [-40, -40, -1, 40, 40, 5.4]).
        positional_encoding (dict): kwargs of :class:`LearnedPositionalEncoding3D`; its
            ``num_feats`` must sum to E (paper (96, 96, 64), tables 50, 50, 16).
        layer_cfg (dict): kwargs of :class:`OccupancyEncoderLayer` (``self_attn_cfg``,
            ``cross_attn_cfg``, ``ffn_cfg``, ``norm_cfg``).
        use_cams_embeds (bool): add the camera embeddings to the image features.
        upsample_norm_cfg (dict): 3D normalisation of the mask-feature upsampler.
        reference_init (bool): initialise like the reference (xavier-uniform on every
            matrix, then xavier-normal on the attention part), see :meth:`init_weights`.

    Forward: see :meth:`forward`.
    """

    # the plan's padded length over the first rig's largest visible count
    # (:meth:`rig_camera_queries`): later rigs that see up to 5 % more share its graph
    RIG_PLAN_HEADROOM = 0.05

    def __init__(self,
                 in_channels: int = 32,
                 embed_dims: int = 256,
                 num_cams: int = 5,
                 num_feature_levels: int = 4,
                 num_layers: int = 1,
                 pc_range: Sequence[float] = PC_RANGE,
                 positional_encoding: Optional[dict] = None,
                 layer_cfg: Optional[dict] = None,
                 use_cams_embeds: bool = True,
                 upsample_norm_cfg: dict = dict(type='BN3d'),
                 reference_init: bool = True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if len(pc_range) != 6:
            raise ValueError(f'OccupancyEncoder: pc_range must have 6 numbers, got {pc_range}')
        self.in_channels = in_channels
        self.embed_dims = embed_dims
        self.num_cams = num_cams
        self.num_feature_levels = num_feature_levels
        self.pc_range = tuple(float(v) for v in pc_range)
        self.use_cams_embeds = use_cams_embeds
        self.reference_init = reference_init

        pos_cfg = dict(positional_encoding or {})
        pos_cfg.pop('type', None)
        self.positional_encoding = LearnedPositionalEncoding3D(**pos_cfg)
        if self.positional_encoding.out_channels != embed_dims:
            raise ValueError(
                f'OccupancyEncoder: positional_encoding num_feats '
                f'{self.positional_encoding.num_feats} sum to '
                f'{self.positional_encoding.out_channels}, embed_dims is {embed_dims}')
        layer_cfg = dict(layer_cfg or {})
        cross_cfg = dict(layer_cfg.pop('cross_attn_cfg', None) or {})
        cross_cfg.setdefault('num_levels', num_feature_levels)
        if cross_cfg['num_levels'] != num_feature_levels:
            raise ValueError(f'OccupancyEncoder: cross_attn_cfg num_levels '
                             f'({cross_cfg["num_levels"]}) != num_feature_levels '
                             f'({num_feature_levels})')
        self.layers = ModuleList([
            OccupancyEncoderLayer(embed_dims=embed_dims, cross_attn_cfg=cross_cfg, **layer_cfg)
            for _ in range(num_layers)
        ])
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims))
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)

        # ref: decoder_input_projs (skipped there too when the widths agree)
        self.input_proj = (SlicedConv3d(in_channels, embed_dims, 1)
                           if in_channels != embed_dims else nn.Identity())
        self.output_proj = SlicedConv3d(embed_dims, in_channels, 1)  # ref: enhance_projs
        self.fuse_conv = ConvModule(2 * in_channels, in_channels, 3, padding=1, bias=True,
                                    conv_cfg=dict(type=SlicedConv3d))  # ref: enhance_conv
        self.compact_proj = SlicedConv3d(in_channels, embed_dims, 1)
        self.upsampler = MaskFeatureUpsampler(in_channels, embed_dims, upsample_norm_cfg)
        self._camera_cache = None  # (key, ref_cam, plan) of the last camera rig, inference
        # inference with fixed rig inputs: (ref_cam, plan) of the rig (see rig_camera_queries)
        self._rig = RigInputs()

    def init_weights(self) -> None:
        """Children's own init first; then, with ``reference_init``, what the reference head
        did on top of it: xavier-uniform on every parameter with >1 dims, then
        xavier-normal on those of the attention layers and the level/camera embeddings
        (1-dim parameters such as the deformable sampling-offset biases are kept)."""
        super().init_weights()
        if not self.reference_init:
            return
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        attention_params = list(self.layers.parameters()) + [self.level_embeds,
                                                             self.cams_embeds]
        for p in attention_params:
            if p.dim() > 1:
                nn.init.xavier_normal_(p)

    def _flatten_img_feats(self, mlvl_img_feats: List[torch.Tensor]):
        """list of (B, N, E, h_l, w_l) -> value (B, N, S, E), spatial_shapes (L, 2),
        level_start_index (L,)."""
        if len(mlvl_img_feats) != self.num_feature_levels:
            raise ValueError(f'OccupancyEncoder: got {len(mlvl_img_feats)} image feature '
                             f'levels, num_feature_levels is {self.num_feature_levels}')
        flat, shapes = [], []
        for lvl, feat in enumerate(mlvl_img_feats):
            B, N, C, h, w = feat.shape
            if C != self.embed_dims or N != self.num_cams:
                raise ValueError(f'OccupancyEncoder: image feature level {lvl} has shape '
                                 f'{tuple(feat.shape)}, expected (B, {self.num_cams}, '
                                 f'{self.embed_dims}, h, w)')
            feat = feat.flatten(3).transpose(2, 3)  # (B, N, h*w, E)
            if self.use_cams_embeds:
                feat = feat + self.cams_embeds[None, :, None, :].to(feat.dtype)
            feat = feat + self.level_embeds[None, None, lvl:lvl + 1, :].to(feat.dtype)
            flat.append(feat)
            shapes.append((h, w))
        device = mlvl_img_feats[0].device
        spatial_shapes = device_constant(shapes, device, torch.long)
        level_start_index = torch.cat([spatial_shapes.new_zeros(1),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]])
        return torch.cat(flat, dim=2), spatial_shapes, level_start_index

    def _camera_queries(self, metric: torch.Tensor, lidar2img: torch.Tensor,
                        img_shape: Tuple[int, int], geometry_key: Optional[Hashable]
                        ) -> Tuple[torch.Tensor, CameraQueryPlan]:
        """Voxel centres projected into the cameras, (B, N, Q, 1, 2), and their
        :class:`CameraQueryPlan`; reused while the (inference-only) key is unchanged."""
        key = None
        if geometry_key is not None and not self.training:
            key = (geometry_key, tuple(lidar2img.shape), tuple(metric.shape), img_shape,
                   str(metric.device))
            cached = self._camera_cache
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
        ref_cam, visible = project_points_to_images(metric, lidar2img, img_shape)
        ref_cam = ref_cam.unsqueeze(3)  # one reference point per query and camera
        plan = plan_camera_queries(visible)
        # one rig at a time (a new key replaces the old entry); never kept in training
        self._camera_cache = None if key is None else (key, ref_cam, plan)
        return ref_cam, plan

    def rig_camera_queries(self, lidar2img: torch.Tensor, img_shape: Sequence[int],
                           geometry_key: Hashable, volume_shape: Sequence[int]
                           ) -> Tuple[torch.Tensor, CameraQueryPlan]:
        """Inference: the voxel queries' camera points and :class:`CameraQueryPlan` for the
        rig that ``geometry_key`` names, held at fixed addresses
        (:class:`~trackocc.utils.rig_inputs.RigInputs`) with the plan's rows padded to a
        length that only grows (the largest visible count + :attr:`RIG_PLAN_HEADROOM`,
        rounded up to 64): given back to :meth:`forward` as ``camera_queries``, they make its
        CUDA graph one for every rig that fits that length.

        Args:
            lidar2img: (B, N, 4, 4); img_shape: network input (H, W);
            volume_shape: (X, Y, Z) of the compact volume.
        """
        if self.training or geometry_key is None:
            raise ValueError('OccupancyEncoder.rig_camera_queries: inference only, with a '
                             'geometry_key naming the rig')
        key = (geometry_key, tuple(lidar2img.shape), tuple(volume_shape), tuple(img_shape))
        held = self._rig.get(key)
        if held is not None:
            return held
        metric, _ = voxel_centres(tuple(volume_shape), self.pc_range, lidar2img.device)
        ref_cam, visible = project_points_to_images(metric, lidar2img, tuple(img_shape))
        B, N, Q = visible.shape
        need = max(int(visible.sum(2).max()), 1)  # one synchronisation per rig
        length = 0
        if self._rig.value is not None:
            last = self._rig.value[1]
            if last.order.shape[0] == B * N and last.cams_seeing.shape == (B, Q):
                length = last.order.shape[1]
        if need > length:
            length = min(Q, math.ceil(need * (1 + self.RIG_PLAN_HEADROOM) / 64) * 64)
        plan = plan_camera_queries(visible, length)
        return self._rig.store(key, (ref_cam.unsqueeze(3), plan))

    def forward(self, mlvl_img_feats: List[torch.Tensor], compact: torch.Tensor,
                ms_volume_feats: Sequence[torch.Tensor], lidar2img: torch.Tensor,
                img_shape: Sequence[int], geometry_key: Optional[Hashable] = None,
                camera_queries: Optional[Tuple[torch.Tensor, CameraQueryPlan]] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Enhance the compact volume and build the mask features.

        Args:
            mlvl_img_feats: L tensors (B, N, E, h_l, w_l) (image FPN levels).
            compact: (B, C_t, X, Y, Z) from :class:`LSSFPN3D`.
            ms_volume_feats: [(B, C_t, 4X, 4Y, Z), (B, 2 C_t, 2X, 2Y, Z/2),
                (B, 4 C_t, X, Y, Z)] from :class:`LSSFPN3D`.
            lidar2img: (B, N, 4, 4) ego -> augmented-input pixels.
            img_shape: network input (H, W).
            geometry_key: at inference, any hashable value identifying ``lidar2img`` (the
                detector passes the bytes of the camera matrices, known on the host): the
                projection of the voxel queries into the cameras and their per-camera
                re-batching are then computed once per camera rig, without the host
                synchronisation of :func:`plan_camera_queries`. Ignored in training.
            camera_queries: (ref_cam, plan) of :meth:`rig_camera_queries`, used as they
                are (``lidar2img`` and ``geometry_key`` then unused).
        Returns:
            compact_occ (B, E, X, Y, Z) and mask_features (B, E, 4X, 4Y, Z).
        """
        B, C, X, Y, Z = compact.shape
        if C != self.in_channels:
            raise ValueError(f'OccupancyEncoder: compact volume has {C} channels, '
                             f'in_channels is {self.in_channels}')
        if tuple(lidar2img.shape) != (B, self.num_cams, 4, 4):
            raise ValueError(f'OccupancyEncoder: lidar2img must be ({B}, {self.num_cams}, '
                             f'4, 4), got {tuple(lidar2img.shape)}')
        if camera_queries is not None:
            ref_cam, plan = camera_queries
        else:
            metric, _ = voxel_centres((X, Y, Z), self.pc_range, compact.device)
            ref_cam, plan = self._camera_queries(metric, lidar2img, tuple(img_shape),
                                                 geometry_key)
        return self.encode(mlvl_img_feats, compact, ms_volume_feats, ref_cam, plan)

    def encode(self, mlvl_img_feats: List[torch.Tensor], compact: torch.Tensor,
               ms_volume_feats: Sequence[torch.Tensor], ref_cam: torch.Tensor,
               plan: CameraQueryPlan) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` after the camera projection: the voxel queries' camera points
        ``ref_cam`` and their :class:`CameraQueryPlan` are given (the ONNX export feeds them
        as inputs). Returns compact_occ (B, E, X, Y, Z) and mask_features (B, E, 4X, 4Y, Z)."""
        B, _, X, Y, Z = compact.shape
        img_value, img_shapes, img_start = self._flatten_img_feats(mlvl_img_feats)
        query = self.input_proj(compact).flatten(2).transpose(1, 2)  # (B, XYZ, E)
        pos = self.positional_encoding(compact.new_zeros(B, X, Y, Z))
        pos = pos.flatten(2).transpose(1, 2).to(query.dtype)
        _, normalized = voxel_centres((X, Y, Z), self.pc_range, compact.device)
        ref_3d = normalized[None, :, None, :].expand(B, -1, 1, 3)
        volume_shape = device_constant([[X, Y, Z]], compact.device, torch.long)
        for layer in self.layers:
            query = layer(query, pos, ref_3d, volume_shape, img_value, ref_cam, plan,
                          img_shapes, img_start)

        enhanced = query.transpose(1, 2).reshape(B, self.embed_dims, X, Y, Z)
        enhanced = self.output_proj(enhanced.to(compact.dtype))
        compact = self.fuse_conv(torch.cat([compact, enhanced], dim=1))  # (B, C_t, X, Y, Z)
        mask_features = self.upsampler(compact, ms_volume_feats)
        return self.compact_proj(compact), mask_features
