"""Lift-splat-shoot view transformer with BEVDepth's camera-aware depth net.

Image features of every camera are lifted to a frustum of ``D`` depth bins (2-42 m, 0.5 m
steps), the frustum points are mapped to the ego (= LiDAR) frame with the camera matrices of
the data contract, and the depth-weighted context features are summed per voxel of the
occupancy grid with ``trackocc.ops.bev_pool_v2``. The result is a channel-first volume
(B, C_t, X, Y, Z) = (B, 32, 200, 200, 16) for the paper configuration.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from trackocc.registry import MODELS

from trackocc.ops import bev_pool_v2, pad_pooling_ranks, voxel_pooling_prepare
from trackocc.ops.bev_pool import BEVPoolRanks
from trackocc.utils.rig_inputs import RigInputs
from .depth_net import build_depth_net

GridRange = Sequence[float]  # (lower, upper, interval)


def decompose_img_aug_matrix(img_aug_matrix: torch.Tensor
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split the 4x4 image augmentation of the data contract into post-rot and post-trans.

    ``img_aug_matrix`` maps homogeneous original pixels ``[u, v, 1, 1]`` to augmented
    pixels; its top-left 2x2 block is the rotation/scale and the translation is what the
    matrix adds to ``(u, v)`` for that input, i.e. columns 2 and 3 together (placing it in
    either column gives the same mapping).

    Args:
        img_aug_matrix: (..., 4, 4).
    Returns:
        post_rot (..., 3, 3) with ``[2, 2] = 1`` and post_trans (..., 3) with ``z = 0``,
        as the reference LSS code uses them.
    """
    post_rot = torch.zeros_like(img_aug_matrix[..., :3, :3])
    post_rot[..., :2, :2] = img_aug_matrix[..., :2, :2]
    post_rot[..., 2, 2] = 1.0
    post_trans = torch.zeros_like(img_aug_matrix[..., :3, 3])
    post_trans[..., :2] = img_aug_matrix[..., :2, 2] + img_aug_matrix[..., :2, 3]
    return post_rot, post_trans


def _inverse(matrices: torch.Tensor, name: str) -> torch.Tensor:
    """Inverse of (..., k, k) matrices, equal to ``torch.inverse``, without its host
    synchronisation on CUDA: a singular matrix fails an asynchronous device assertion there
    (a RuntimeError at once on CPU)."""
    inverse, info = torch.linalg.inv_ex(matrices)
    torch._assert_async(info.eq(0).all(),
                        f'image_to_ego: a {name} matrix of the batch is singular')
    return inverse


def image_to_ego(uvd: torch.Tensor, cam2img: torch.Tensor, lidar2cam: torch.Tensor,
                 img_aug_matrix: torch.Tensor) -> torch.Tensor:
    """Lift augmented-image pixels with depth to the ego (= LiDAR) frame.

    Undo the image augmentation (img_aug_matrix^-1), scale (u, v) by the depth, then apply
    cam2img^-1 and lidar2cam^-1 (no BEV augmentation).

    Args:
        uvd: (B, N, ..., 3) augmented-input pixel coordinates (u, v) and depth in metres.
        cam2img, lidar2cam, img_aug_matrix: (B, N, 4, 4).
    Returns:
        (B, N, ..., 3) ego coordinates, float32.
    """
    B, N = uvd.shape[:2]
    extra = (1,) * (uvd.dim() - 3)
    post_rot, post_trans = decompose_img_aug_matrix(img_aug_matrix.float())
    pts = uvd.float() - post_trans.view(B, N, *extra, 3)
    pts = _inverse(post_rot, 'img_aug_matrix').view(B, N, *extra, 3, 3).matmul(
        pts.unsqueeze(-1))
    pts = torch.cat((pts[..., :2, :] * pts[..., 2:3, :], pts[..., 2:3, :],
                     torch.ones_like(pts[..., :1, :])), dim=-2)  # (..., 4, 1)
    img2ego = _inverse(lidar2cam.float(), 'lidar2cam').matmul(
        _inverse(cam2img.float(), 'cam2img'))
    return img2ego.view(B, N, *extra, 4, 4).matmul(pts).squeeze(-1)[..., :3]


@MODELS.register_module()
class LSSViewTransformerBEVDepth(BaseModule):
    """BEVDepth-style LSS view transformer producing a 3D feature volume.

    Args:
        grid_config (dict): ``x``, ``y``, ``z``, ``depth`` as (lower, upper, interval);
            paper: x, y (-40, 40, 0.4), z (-1, 5.4, 0.4), depth (2, 42, 0.5).
        input_size (tuple[int]): network input (H, W), e.g. (256, 704).
        downsample (int): stride of the image feature that is lifted (16).
        in_channels (int): channels of that image feature (E).
        out_channels (int): channels of the volume (C_t).
        loss_depth_weight (float): weight of :meth:`get_depth_loss`.
        depthnet_cfg (dict): extra kwargs of :class:`DepthNet` (``use_dcn``, ``use_aspp``,
            ``aspp_mid_channels``, ``with_cp``, ``mid_channels``).
        sid (bool): spacing-increasing depth discretisation instead of uniform bins.
        collapse_z (bool): fold Z into channels and return a BEV map (B, Z*C, X, Y).
        legacy_voxel_index (bool): metres -> voxel index by truncation toward zero as the
            reference (keeps points up to one voxel below the lower bound); default floor.
        frustum_at_cell_centres (bool): put the frustum of feature cell k at the centre of
            its input pixels, ``downsample * (k + 0.5)`` (the data contract's pixel
            convention). Default False keeps the reference's ``linspace(0, W - 1, w)``, which
            is up to ``downsample / 2`` pixels off at the image borders.
    """

    def __init__(self,
                 grid_config: Dict[str, GridRange],
                 input_size: Sequence[int],
                 downsample: int = 16,
                 in_channels: int = 256,
                 out_channels: int = 32,
                 loss_depth_weight: float = 1.0,
                 depthnet_cfg: Optional[dict] = None,
                 sid: bool = False,
                 collapse_z: bool = False,
                 legacy_voxel_index: bool = False,
                 frustum_at_cell_centres: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        for key in ('x', 'y', 'z', 'depth'):
            if key not in grid_config or len(grid_config[key]) != 3:
                raise ValueError(f'LSSViewTransformerBEVDepth: grid_config[{key!r}] must be '
                                 f'(lower, upper, interval), got {grid_config.get(key)}')
        H, W = input_size
        if H % downsample or W % downsample:
            raise ValueError(f'LSSViewTransformerBEVDepth: input_size {tuple(input_size)} '
                             f'is not divisible by downsample={downsample}')
        self.grid_config = {k: tuple(float(v) for v in grid_config[k])
                            for k in ('x', 'y', 'z', 'depth')}
        self.input_size = (int(H), int(W))
        self.downsample = downsample
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.loss_depth_weight = loss_depth_weight
        self.sid = sid
        self.collapse_z = collapse_z
        self.legacy_voxel_index = legacy_voxel_index

        axes = [self.grid_config[k] for k in ('x', 'y', 'z')]
        self.register_buffer('grid_lower_bound',
                             torch.tensor([a[0] for a in axes]), persistent=False)
        self.register_buffer('grid_interval',
                             torch.tensor([a[2] for a in axes]), persistent=False)
        self.grid_size = tuple(int(round((a[1] - a[0]) / a[2])) for a in axes)  # (X, Y, Z)
        frustum = self.create_frustum(self.grid_config['depth'], self.input_size,
                                      downsample, sid, frustum_at_cell_centres)
        self.register_buffer('frustum', frustum, persistent=False)
        self.D = frustum.shape[0]
        self.depth_net = build_depth_net(in_channels, out_channels, self.D,
                                         **(depthnet_cfg or {}))
        # inference: pooling ranks of the last camera geometry (see ``forward``)
        self._ranks_cache: Optional[Tuple[object, BEVPoolRanks]] = None
        # inference with fixed rig inputs: the padded ranks of the rig (see ``rig_ranks``)
        self._rig = RigInputs()

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def create_frustum(depth_cfg: GridRange, input_size: Sequence[int], downsample: int,
                       sid: bool = False, at_cell_centres: bool = False) -> torch.Tensor:
        """Frustum template in augmented-image pixels: (D, h, w, 3) holding (u, v, depth).

        Feature columns/rows are spread evenly over [0, W-1] / [0, H-1] (reference LSS), or
        put at the centres of their ``downsample``-pixel cells with ``at_cell_centres``.
        """
        H, W = input_size
        h, w = H // downsample, W // downsample
        lower, upper, step = depth_cfg
        d = torch.arange(lower, upper, step, dtype=torch.float)
        if sid:
            k = torch.arange(d.shape[0], dtype=torch.float)
            d = torch.exp(torch.log(torch.tensor(lower)) + k / (d.shape[0] - 1) *
                          torch.log(torch.tensor((upper - 1) / lower)))
        D = d.shape[0]
        d = d.view(D, 1, 1).expand(D, h, w)
        if at_cell_centres:
            u = (torch.arange(w, dtype=torch.float) + 0.5) * downsample
            v = (torch.arange(h, dtype=torch.float) + 0.5) * downsample
        else:
            u, v = torch.linspace(0, W - 1, w), torch.linspace(0, H - 1, h)
        u = u.view(1, 1, w).expand(D, h, w)
        v = v.view(1, h, 1).expand(D, h, w)
        return torch.stack((u, v, d), dim=-1)

    def get_ego_coords(self, cam2img: torch.Tensor, lidar2cam: torch.Tensor,
                       img_aug_matrix: torch.Tensor) -> torch.Tensor:
        """Ego-frame coordinates of every frustum point: (B, N, D, h, w, 3)."""
        B, N = cam2img.shape[:2]
        frustum = self.frustum.view(1, 1, *self.frustum.shape).expand(B, N, -1, -1, -1, -1)
        return image_to_ego(frustum, cam2img, lidar2cam, img_aug_matrix)

    def pooling_ranks(self, cam_params: Dict[str, torch.Tensor]) -> BEVPoolRanks:
        """bev_pool_v2 ranks and intervals of the frustum under these cameras.

        At inference, a ``cam_params['geometry_key']`` (any hashable value that identifies
        the camera matrices, e.g. their bytes) lets consecutive frames of a fixed rig reuse
        the ranks of the last call instead of rebuilding them (a sort over every frustum
        point and host synchronisations, BEVDet's acceleration). Training never caches.
        """
        key = None if self.training else cam_params.get('geometry_key')
        if key is not None and self._ranks_cache is not None and self._ranks_cache[0] == key:
            return self._ranks_cache[1]
        coords = self.get_ego_coords(cam_params['cam2img'], cam_params['lidar2cam'],
                                     cam_params['img_aug_matrix'])
        ranks = voxel_pooling_prepare(coords, self.grid_lower_bound, self.grid_interval,
                                      self.grid_size, trunc_toward_zero=self.legacy_voxel_index)
        self._ranks_cache = None if key is None else (key, ranks)
        return ranks

    def rig_ranks(self, cam_params: Dict[str, torch.Tensor]) -> BEVPoolRanks:
        """Inference: the ranks of :meth:`pooling_ranks` for the rig that
        ``cam_params['geometry_key']`` names, padded to every frustum point
        (:func:`~trackocc.ops.pad_pooling_ranks`) and held at fixed addresses
        (:class:`~trackocc.utils.rig_inputs.RigInputs`). Given back to :meth:`forward` as
        ``cam_params['ranks']`` (without the key), they make its CUDA graph one for every rig:
        a new rig rewrites them in place."""
        key = cam_params.get('geometry_key')
        if self.training or key is None:
            raise ValueError('LSSViewTransformerBEVDepth.rig_ranks: inference only, with a '
                             "cam_params['geometry_key'] naming the rig")
        held = self._rig.get(key)
        if held is not None:
            return held
        B, N = cam_params['cam2img'].shape[:2]
        D, h, w = self.frustum.shape[:3]
        X, Y, Z = self.grid_size
        num_points = B * N * D * h * w
        ranks = self.pooling_ranks({k: cam_params[k]  # without the key: not cached twice
                                    for k in ('cam2img', 'lidar2cam', 'img_aug_matrix')})
        return self._rig.store(key, pad_pooling_ranks(ranks, num_points,
                                                      min(num_points, B * X * Y * Z)))

    def voxel_pooling(self, ranks: BEVPoolRanks, depth: torch.Tensor,
                      feat: torch.Tensor) -> torch.Tensor:
        """Splat depth-weighted features into the grid.

        Args:
            ranks: of :meth:`pooling_ranks`; depth: (B, N, D, h, w); feat: (B, N, C, h, w).
        Returns:
            (B, C, X, Y, Z), or (B, Z*C, X, Y) when ``collapse_z``.
        """
        B, C = feat.shape[0], feat.shape[2]
        X, Y, Z = self.grid_size
        if ranks.ranks_bev.numel() == 0:
            # No frustum point inside the grid: an all-zero volume that still depends on
            # the inputs so that every parameter receives a (zero) gradient.
            vol = feat.new_zeros(B, C, Z, Y, X) + 0 * (feat.sum() + depth.sum())
        else:
            vol = bev_pool_v2(depth.contiguous(), feat.permute(0, 1, 3, 4, 2).contiguous(),
                              ranks.ranks_depth, ranks.ranks_feat, ranks.ranks_bev,
                              (B, Z, Y, X, C), ranks.interval_starts,
                              ranks.interval_lengths)  # (B, C, Z, Y, X)
        if self.collapse_z:
            return vol.permute(0, 2, 1, 4, 3).reshape(B, Z * C, X, Y)
        return vol.permute(0, 1, 4, 3, 2).contiguous()

    # ------------------------------------------------------------------ forward
    def get_mlp_input(self, cam2img: torch.Tensor, lidar2cam: torch.Tensor,
                      img_aug_matrix: torch.Tensor) -> torch.Tensor:
        """Camera-parameter vector of the depth net: (B, N, 27).

        Order as BEVDepth: fx, fy, cx, cy, post-rot/trans rows (6), BEV augmentation
        (5, identity here), camera-to-ego [R | t] flattened (12).
        """
        post_rot, post_trans = decompose_img_aug_matrix(img_aug_matrix.float())
        intrin = cam2img.float()
        # inv_ex: no singularity check, which would synchronise with the device every frame
        cam2ego = torch.linalg.inv_ex(lidar2cam.float()).inverse
        ones, zeros = torch.ones_like(intrin[..., 0, 0]), torch.zeros_like(intrin[..., 0, 0])
        params = torch.stack([
            intrin[..., 0, 0], intrin[..., 1, 1], intrin[..., 0, 2], intrin[..., 1, 2],
            post_rot[..., 0, 0], post_rot[..., 0, 1], post_trans[..., 0],
            post_rot[..., 1, 0], post_rot[..., 1, 1], post_trans[..., 1],
            ones, zeros, zeros, ones, ones], dim=-1)
        return torch.cat([params, cam2ego[..., :3, :].flatten(-2)], dim=-1)

    def forward(self, img_feat: torch.Tensor, cam_params: Dict[str, torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Lift image features to the voxel grid.

        Args:
            img_feat: (B, N, in_channels, h, w), h = H / downsample, w = W / downsample.
            cam_params: ``cam2img``, ``lidar2cam``, ``img_aug_matrix``, each (B, N, 4, 4),
                and optionally ``geometry_key`` (see :meth:`pooling_ranks`) or ``ranks``
                (:meth:`rig_ranks`, used as they are).
        Returns:
            volume (B, C_t, X, Y, Z) and depth probabilities (B*N, D, h, w).
        """
        B, N, C, h, w = img_feat.shape
        fh, fw = self.frustum.shape[1:3]
        if (h, w) != (fh, fw) or C != self.in_channels:
            raise ValueError(
                f'LSSViewTransformerBEVDepth: expected image features (B, N, '
                f'{self.in_channels}, {fh}, {fw}) for input_size {self.input_size} and '
                f'downsample {self.downsample}, got {tuple(img_feat.shape)}')
        for key in ('cam2img', 'lidar2cam', 'img_aug_matrix'):
            if key not in cam_params or tuple(cam_params[key].shape) != (B, N, 4, 4):
                got = None if key not in cam_params else tuple(cam_params[key].shape)
                raise ValueError(f'LSSViewTransformerBEVDepth: cam_params[{key!r}] must be '
                                 f'({B}, {N}, 4, 4), got {got}')
        if self.training and B * N == 1:
            raise ValueError('LSSViewTransformerBEVDepth: training needs more than one camera '
                             'image per batch (B * N > 1): the depth net batch-normalizes the '
                             'camera parameters over them')
        cam2img, lidar2cam, img_aug = (cam_params['cam2img'], cam_params['lidar2cam'],
                                       cam_params['img_aug_matrix'])
        mlp_input = self.get_mlp_input(cam2img, lidar2cam, img_aug)
        ranks = cam_params.get('ranks')
        if ranks is None:
            ranks = self.pooling_ranks(cam_params)
        elif not isinstance(ranks, BEVPoolRanks):
            raise ValueError(f"LSSViewTransformerBEVDepth: cam_params['ranks'] must be "
                             f'BEVPoolRanks (rig_ranks), got {type(ranks).__name__}')
        return self.lift(img_feat, mlp_input, ranks)

    def lift(self, img_feat: torch.Tensor, mlp_input: torch.Tensor, ranks: BEVPoolRanks
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` once the camera geometry is known: depth net, then the depth x
        context outer product pooled into the grid by ``ranks``.

        Args:
            img_feat: (B, N, in_channels, h, w); mlp_input: (B, N, 27) camera parameters of
            the depth net (:meth:`get_mlp_input`); ranks: :meth:`pooling_ranks` of the rig.
        Returns:
            volume (B, C_t, X, Y, Z) and depth probabilities (B*N, D, h, w).
        """
        B, N, C, h, w = img_feat.shape
        x = self.depth_net(img_feat.reshape(B * N, C, h, w), mlp_input)
        depth = x[:, :self.D].softmax(dim=1)
        context = x[:, self.D:self.D + self.out_channels]
        with torch.autocast(device_type=img_feat.device.type, enabled=False):
            volume = self.voxel_pooling(ranks, depth.view(B, N, self.D, h, w),
                                        context.view(B, N, self.out_channels, h, w))
        return volume, depth

    # ------------------------------------------------------------------ depth loss
    def get_downsampled_gt_depth(self, gt_depth: torch.Tensor) -> torch.Tensor:
        """One-hot depth targets per feature pixel: (B*N*h*w, D).

        The target of a feature pixel is the nearest LiDAR depth among its
        ``downsample x downsample`` input pixels; pixels without a point (0) or outside
        the depth range get an all-zero row.
        """
        B, N, H, W = gt_depth.shape
        s = self.downsample
        if H % s or W % s:
            raise ValueError(f'get_depth_loss: gt_depth spatial size {(H, W)} is not '
                             f'divisible by downsample={s}')
        d = gt_depth.float().view(B * N, H // s, s, W // s, s).permute(0, 1, 3, 2, 4)
        d = d.reshape(B * N, H // s, W // s, s * s)
        d = torch.where(d == 0.0, torch.full_like(d, 1e5), d).min(dim=-1).values
        lower, upper, step = self.grid_config['depth']
        if self.sid:
            d = torch.log(d) - torch.log(torch.tensor(lower))
            d = d * (self.D - 1) / torch.log(torch.tensor((upper - 1.0) / lower)) + 1.0
        else:
            d = (d - (lower - step)) / step
        # bin index + 1; index 0 (and anything out of range) means "no target"
        d = torch.where((d < self.D + 1) & (d >= 0.0), d, torch.zeros_like(d))
        one_hot = F.one_hot(d.long(), num_classes=self.D + 1).view(-1, self.D + 1)
        return one_hot[:, 1:].float()

    def get_depth_loss(self, gt_depth: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy between predicted depth distributions and one-hot targets.

        Args:
            gt_depth: (B, N, H, W) metres at input resolution, 0 where no LiDAR point.
            depth: (B*N, D, h, w) softmax probabilities from :meth:`forward`.
        Returns:
            scalar, ``loss_depth_weight * sum(BCE over pixels with a target) / max(1, #)``;
            pixels without a target contribute neither loss nor gradient.
        """
        labels = self.get_downsampled_gt_depth(gt_depth)
        if depth.shape[0] * depth.shape[2] * depth.shape[3] != labels.shape[0]:
            raise ValueError(f'get_depth_loss: gt_depth {tuple(gt_depth.shape)} does not '
                             f'match depth {tuple(depth.shape)}')
        with torch.autocast(device_type=depth.device.type, enabled=False):
            preds = depth.float().permute(0, 2, 3, 1).reshape(-1, self.D)
            # pixels without a target weigh 0 (no bool-mask indexing, no host sync)
            fg = (labels.max(dim=1, keepdim=True).values > 0.0).float()  # (M, 1)
            loss = F.binary_cross_entropy(preds, labels, weight=fg.expand_as(labels),
                                          reduction='sum')
            loss = loss / fg.sum().clamp_min(1.0)
        return self.loss_depth_weight * loss
