"""The per-frame network of :class:`TrackOcc` as one traceable module (ONNX export).

One call runs, for one frame of one sequence (B = 1), everything between the normalized
camera images and the decoder outputs of the thing (track) and stuff queries: image backbone +
FPN, the LSS view transformer (depth net, bev_pool_v2 in its pure-PyTorch form), the 3D volume
encoder, the occupancy encoder (3D deformable self-attention and spatial cross-attention in
their PyTorch forms) and the mask decoder head, for any number Q of thing queries.

What depends only on the camera rig is computed on the host by :func:`frame_geometry` with the
model's own functions and fed as inputs (the model caches the same tables per rig at
inference): the depth net's camera-parameter vector, the bev_pool ranks and intervals (their
length P depends on the rig), and the projection of the compact voxels into the cameras with
their per-camera re-batching (its width L depends on the rig). Matrix inverses, sorting and
data-dependent sizes therefore stay out of the graph.

Inputs (names of :data:`INPUT_NAMES`; dims named in :data:`DYNAMIC_AXES` may vary):
    ``imgs`` (N, 3, H, W) float32, normalized as ``TrackOccDataPreprocessor`` does;
    ``mlp_input`` (1, N, 27) float32; ``ranks_depth``, ``ranks_feat``, ``ranks_bev`` (P,)
    int64; ``interval_starts``, ``interval_lengths`` (I,) int64; ``ref_cam`` (1, N, V, 1, 2)
    float32 (V = X'Y'Z' compact voxels); ``cam_order`` (N, L) int64; ``cam_valid`` (N, L) bool;
    ``cams_seeing`` (1, V) float32; ``thing_query`` (1, Q, 2E) float32; ``thing_ref_pts``
    (1, Q, 3) float32 normalized to [0, 1].
Outputs (:data:`OUTPUT_NAMES`, last decoder layer): ``thing_cls`` (1, Q, C),
    ``thing_masks`` (1, Q, X, Y, Z), ``thing_centers`` (1, Q, 3 or 6), ``thing_ref_pts_out``
    (1, Q, 3), ``thing_embed`` (1, Q, E), ``stuff_cls`` (1, S, C), ``stuff_masks``
    (1, S, X, Y, Z).
"""
from typing import Dict, List, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from trackocc.models.layers.occupancy_encoder import voxel_centres
from trackocc.models.layers.spatial_cross_attention import (CameraQueryPlan,
                                                            plan_camera_queries,
                                                            project_points_to_images)
from trackocc.ops import voxel_pooling_prepare
from trackocc.ops.bev_pool import BEVPoolRanks

INPUT_NAMES = ('imgs', 'mlp_input', 'ranks_depth', 'ranks_feat', 'ranks_bev',
               'interval_starts', 'interval_lengths', 'ref_cam', 'cam_order', 'cam_valid',
               'cams_seeing', 'thing_query', 'thing_ref_pts')
OUTPUT_NAMES = ('thing_cls', 'thing_masks', 'thing_centers', 'thing_ref_pts_out',
                'thing_embed', 'stuff_cls', 'stuff_masks')
DYNAMIC_AXES = {
    'ranks_depth': {0: 'num_points'}, 'ranks_feat': {0: 'num_points'},
    'ranks_bev': {0: 'num_points'}, 'interval_starts': {0: 'num_intervals'},
    'interval_lengths': {0: 'num_intervals'}, 'cam_order': {1: 'cam_queries'},
    'cam_valid': {1: 'cam_queries'}, 'thing_query': {1: 'num_queries'},
    'thing_ref_pts': {1: 'num_queries'}, 'thing_cls': {1: 'num_queries'},
    'thing_masks': {1: 'num_queries'}, 'thing_centers': {1: 'num_queries'},
    'thing_ref_pts_out': {1: 'num_queries'}, 'thing_embed': {1: 'num_queries'},
}


class FrameGeometry(NamedTuple):
    """Camera-rig inputs of :class:`TrackOccFrameNetwork` (see the module docstring)."""
    mlp_input: Tensor
    ranks_depth: Tensor
    ranks_feat: Tensor
    ranks_bev: Tensor
    interval_starts: Tensor
    interval_lengths: Tensor
    ref_cam: Tensor
    cam_order: Tensor
    cam_valid: Tensor
    cams_seeing: Tensor


def check_exportable(model: nn.Module) -> None:
    """Raise a clear error for TrackOcc settings the per-frame network does not cover."""
    vt = model.img_view_transformer
    if getattr(model, 'refiner', None) is not None:
        raise ValueError('ONNX export: the sparse voxel refiner (spconv) has no ONNX form; '
                         'export a config without `refiner`')
    if getattr(vt, 'collapse_z', False):
        raise ValueError('ONNX export: img_view_transformer.collapse_z is not supported')
    if not getattr(model.volume_encoder_neck, 'reverse', False):
        raise ValueError('ONNX export: volume_encoder_neck must use reverse=True (the TrackOcc '
                         'compact volume)')
    if getattr(model, 'fixed_track_rows', False):
        raise ValueError('ONNX export: fixed_track_rows carries filler rows that the per-frame '
                         'network has no validity mask for; turn it off '
                         '(model.fixed_track_rows = False)')


def compact_shape(model: nn.Module) -> tuple:
    """(X', Y', Z') of the compact volume (the volume encoder neck's ``size``)."""
    return tuple(int(s) for s in model.volume_encoder_neck.size)


@torch.no_grad()
def frame_geometry(model: nn.Module, meta: dict) -> FrameGeometry:
    """Host-side rig tables of one frame from its metainfo (``cam2img``, ``lidar2cam``,
    ``img_aug_matrix``, ``lidar2img``, each (N, 4, 4), and ``img_shape`` or the model's
    input size), computed with the model's own view-transformer / encoder functions."""
    vt = model.img_view_transformer

    def stack(key):
        if key not in meta:
            raise KeyError(f'frame_geometry: frame metainfo lacks `{key}` '
                           '(see docs/data_contract.md)')
        return torch.from_numpy(np.asarray(meta[key], dtype=np.float32))[None]

    cam_params = {k: stack(k) for k in ('cam2img', 'lidar2cam', 'img_aug_matrix')}
    mlp_input = vt.get_mlp_input(cam_params['cam2img'], cam_params['lidar2cam'],
                                 cam_params['img_aug_matrix'])
    coords = vt.get_ego_coords(cam_params['cam2img'], cam_params['lidar2cam'],
                               cam_params['img_aug_matrix'])
    ranks = voxel_pooling_prepare(coords, vt.grid_lower_bound, vt.grid_interval, vt.grid_size,
                                  trunc_toward_zero=vt.legacy_voxel_index)
    if ranks.ranks_bev.numel() == 0:
        raise ValueError('frame_geometry: no frustum point falls into the occupancy grid '
                         '(check the camera matrices)')
    metric, _ = voxel_centres(compact_shape(model), model.occ_encoder.pc_range)
    ref_cam, visible = project_points_to_images(metric, stack('lidar2img'),
                                                tuple(vt.input_size))
    plan = plan_camera_queries(visible)
    return FrameGeometry(mlp_input.contiguous(), *(t.long() for t in ranks),
                         ref_cam.unsqueeze(3).contiguous(), plan.order.contiguous(),
                         plan.valid.contiguous(), plan.cams_seeing.contiguous())


class TrackOccFrameNetwork(nn.Module):
    """Per-frame network of a :class:`TrackOcc` model (shares its modules and weights).

    Args:
        model (TrackOcc): the detector, in eval mode; its image encoder, view transformer,
            volume encoder, occupancy encoder and head are called, nothing is copied.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_exportable(model)
        self.model = model

    def _occupancy_encoder(self, mlvl: List[Tensor], compact: Tensor, ms_volume: List[Tensor],
                           ref_cam: Tensor, cam_order: Tensor, cam_valid: Tensor,
                           cams_seeing: Tensor):
        """:meth:`OccupancyEncoder.encode` with the camera plan given as inputs."""
        plan = CameraQueryPlan(cam_order, cam_valid, cams_seeing)
        return self.model.occ_encoder.encode(mlvl, compact, ms_volume, ref_cam, plan)

    def forward(self, imgs: Tensor, mlp_input: Tensor, ranks_depth: Tensor,
                ranks_feat: Tensor, ranks_bev: Tensor, interval_starts: Tensor,
                interval_lengths: Tensor, ref_cam: Tensor, cam_order: Tensor,
                cam_valid: Tensor, cams_seeing: Tensor, thing_query: Tensor,
                thing_ref_pts: Tensor):
        model = self.model
        vt = model.img_view_transformer
        feats = model._image_encoder(imgs)
        mlvl = [f.unsqueeze(0) for f in feats]  # (1, N, E, h_l, w_l)
        ranks = BEVPoolRanks(ranks_depth, ranks_feat, ranks_bev, interval_starts,
                             interval_lengths)
        volume, _ = vt.lift(mlvl[model.view_transformer_level], mlp_input, ranks)
        compact, ms_volume = model._volume_encoder(volume)
        compact_occ, mask_features = self._occupancy_encoder(
            mlvl, compact, ms_volume, ref_cam, cam_order, cam_valid, cams_seeing)
        out = model.pts_bbox_head(thing_query, thing_ref_pts, compact_occ, mask_features)
        return (out['thing_cls'][-1], out['thing_masks'][-1], out['thing_centers'][-1],
                out['thing_ref_pts'], out['thing_embed'], out['stuff_cls'][-1],
                out['stuff_masks'][-1])


def head_outputs(outputs) -> Dict:
    """The network's output tuple as the head's output dict (one decoder layer)."""
    named = dict(zip(OUTPUT_NAMES, outputs))
    return dict(thing_cls=[named['thing_cls']], thing_masks=[named['thing_masks']],
                thing_centers=[named['thing_centers']], stuff_cls=[named['stuff_cls']],
                stuff_masks=[named['stuff_masks']], thing_ref_pts=named['thing_ref_pts_out'],
                thing_embed=named['thing_embed'])


def network_inputs(geometry: FrameGeometry, imgs: Tensor, thing_query: Tensor,
                   thing_ref_pts: Tensor) -> tuple:
    """Positional inputs of :class:`TrackOccFrameNetwork` in :data:`INPUT_NAMES` order.

    Args:
        imgs (Tensor): (N, 3, H, W); thing_query (Q, 2E); thing_ref_pts (Q, 3) in [0, 1].
    """
    return (imgs, *geometry, thing_query[None], thing_ref_pts[None])


__all__ = ['TrackOccFrameNetwork', 'FrameGeometry', 'frame_geometry', 'network_inputs',
           'head_outputs', 'check_exportable', 'INPUT_NAMES', 'OUTPUT_NAMES', 'DYNAMIC_AXES']
