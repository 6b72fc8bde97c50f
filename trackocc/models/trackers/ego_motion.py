"""Reference-point ego-motion alignment between frames (and point normalization helpers).

Reference points of the thing queries live in the normalized occupancy grid: (x, y, z) in
[0, 1] over ``pc_range = [x_min, y_min, z_min, x_max, y_max, z_max]`` of the ego frame; track
instances store them in inverse-sigmoid space. Before a query is used in the next frame its
point is moved by its predicted velocity and re-expressed in the next ego frame.
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from trackocc.utils.device_constants import device_constant, to_device_async


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Inverse of the sigmoid on [0, 1] (clamped to avoid infinities)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def denormalize_points(pts: Tensor, pc_range: Sequence[float]) -> Tensor:
    """(..., 3) normalized [0, 1] points -> metric ego-frame points."""
    lo = device_constant(pc_range[:3], pts.device, pts.dtype)
    hi = device_constant(pc_range[3:6], pts.device, pts.dtype)
    return pts * (hi - lo) + lo


def normalize_points(pts: Tensor, pc_range: Sequence[float]) -> Tensor:
    """(..., 3) metric ego-frame points -> normalized [0, 1] (not clamped)."""
    lo = device_constant(pc_range[:3], pts.device, pts.dtype)
    hi = device_constant(pc_range[3:6], pts.device, pts.dtype)
    return (pts - lo) / (hi - lo)


def relative_ego_transform(src_ego2global: Tensor, dst_ego2global: Tensor) -> Tensor:
    """4x4 transform mapping points of the src ego frame into the dst ego frame:
    ``inverse(dst_ego2global) @ src_ego2global``."""
    src = torch.as_tensor(src_ego2global, dtype=torch.float64)
    dst = torch.as_tensor(dst_ego2global, dtype=torch.float64)
    if src.shape != (4, 4) or dst.shape != (4, 4):
        raise ValueError(f'ego2global must be 4x4, got {tuple(src.shape)} and {tuple(dst.shape)}')
    return torch.linalg.inv(dst) @ src


def align_ref_points(ref_pts: Tensor,
                     src2dst: Tensor,
                     pc_range: Sequence[float],
                     velocity: Optional[Tensor] = None,
                     time_interval: float = 0.5) -> Tensor:
    """Move reference points to the next frame.

    Args:
        ref_pts (Tensor): (Q, 3) points in inverse-sigmoid space of the src frame grid.
        src2dst (Tensor): (4, 4) ego-motion transform from the src to the dst ego frame.
        pc_range (list[float]): grid range ``[x0, y0, z0, x1, y1, z1]`` in metres.
        velocity (Tensor, optional): (Q, 3) velocity (m/s) in the src frame; the point is
            first advanced by ``velocity * time_interval``.
        time_interval (float): seconds between the two frames.

    Returns:
        Tensor: (Q, 3) float32 points in inverse-sigmoid space of the dst frame grid.
    """
    if ref_pts.dim() != 2 or ref_pts.shape[-1] != 3:
        raise ValueError(f'ref_pts must be (Q, 3), got {tuple(ref_pts.shape)}')
    pts = denormalize_points(ref_pts.float().sigmoid(), pc_range)  # float32 also under AMP
    if velocity is not None:
        if velocity.shape != pts.shape:
            raise ValueError(f'velocity must be {tuple(pts.shape)}, got {tuple(velocity.shape)}')
        pts = pts + velocity.float() * time_interval
    mat = to_device_async(src2dst, pts.device, pts.dtype)
    pts = pts @ mat[:3, :3].T + mat[:3, 3]
    return inverse_sigmoid(normalize_points(pts, pc_range))
