"""Refinement of full-resolution voxel features at occupied voxels only (spconv).

:class:`SparseVoxelRefiner` gathers the voxels predicted occupied (not free), runs
submanifold sparse 3D residual blocks over them (one shared rulebook: every conv uses the same
``indice_key``) and scatters the result back as a residual onto the dense features; free
voxels keep their features unchanged. :class:`DenseVoxelRefiner` is the same network run densely
on every voxel (the path the sparse one replaces, kept for comparison and small grids).

Both: ``forward(feats (B, C, X, Y, Z), occupied (B, X, Y, Z) bool) -> (B, C, X, Y, Z)``.
"""
from __future__ import annotations

from typing import Optional

import torch
from mmdet.models.backbones.resnet import BasicBlock
from mmdet3d.models.layers import SparseBasicBlock
from trackocc.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

try:
    from spconv.pytorch import ConvAlgo, SparseConvTensor, SparseSequential
except ImportError:  # the refiner then raises when built; everything else keeps working
    ConvAlgo = SparseConvTensor = SparseSequential = None


def occupied_from_semantics(sem_logits: Tensor, free_index: int = 15) -> Tensor:
    """(B, num_classes, X, Y, Z) semantic logits -> (B, X, Y, Z) bool, argmax not free."""
    if sem_logits.dim() != 5:
        raise ValueError(f'occupied_from_semantics: expected (B, K, X, Y, Z) logits, got '
                         f'{tuple(sem_logits.shape)}')
    return sem_logits.argmax(dim=1) != free_index


def _check(name: str, feats: Tensor, occupied: Tensor, in_channels: int) -> None:
    if feats.dim() != 5 or feats.shape[1] != in_channels:
        raise ValueError(f'{name}: feats must be (B, {in_channels}, X, Y, Z), got '
                         f'{tuple(feats.shape)}')
    if occupied.dtype != torch.bool or occupied.shape != feats.shape[:1] + feats.shape[2:]:
        raise ValueError(f'{name}: occupied must be a bool (B, X, Y, Z) = '
                         f'{tuple(feats.shape[:1] + feats.shape[2:])} mask, got '
                         f'{occupied.dtype} {tuple(occupied.shape)}')


@MODELS.register_module()
class SparseVoxelRefiner(BaseModule):
    """Submanifold sparse residual refinement of the occupied voxels.

    Args:
        in_channels (int): C of the dense features (the mask-feature width E).
        mid_channels (int): width of the residual blocks; linear projections map C -> mid ->
            C around them.
        num_blocks (int): number of :class:`mmdet3d.models.layers.SparseBasicBlock`
            (two 3x3x3 SubMConv3d + BN1d each, identity shortcut).
        norm_cfg (dict): norm of the blocks (1-D, over voxel features).
        indice_key (str): rulebook key shared by every conv (computed once per forward).
        zero_init_out (bool): zero the output projection so that a new refiner starts as the
            identity (safe to add to a trained model).
        cuda_algo (str): spconv algorithm on CUDA ('MaskImplicitGemm' or 'Native'); CPU
            always uses ConvAlgo.Native.
    """

    def __init__(self,
                 in_channels: int = 256,
                 mid_channels: int = 64,
                 num_blocks: int = 2,
                 norm_cfg: dict = dict(type='BN1d', eps=1e-3, momentum=0.01),
                 indice_key: str = 'voxel_refiner_subm',
                 zero_init_out: bool = True,
                 cuda_algo: str = 'MaskImplicitGemm',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if SparseConvTensor is None:
            raise ImportError('SparseVoxelRefiner needs spconv 2.x (pip install spconv-cu118)')
        if num_blocks < 1:
            raise ValueError(f'SparseVoxelRefiner: num_blocks must be >= 1, got {num_blocks}')
        self.in_channels = in_channels
        self.indice_key = indice_key
        self.cuda_algo = getattr(ConvAlgo, cuda_algo)
        self.in_proj = nn.Linear(in_channels, mid_channels)
        self.blocks = SparseSequential(*[
            SparseBasicBlock(mid_channels, mid_channels, indice_key=indice_key,
                             conv_cfg=dict(type='SubMConv3d'), norm_cfg=dict(norm_cfg))
            for _ in range(num_blocks)
        ])
        self.out_proj = nn.Linear(mid_channels, in_channels)
        if zero_init_out:
            nn.init.zeros_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)

    def _set_algo(self, device: torch.device) -> None:
        """spconv's implicit-GEMM kernels are CUDA-only: use Native on CPU (same weights)."""
        algo = self.cuda_algo if device.type == 'cuda' else ConvAlgo.Native
        for m in self.blocks.modules():
            if hasattr(m, 'algo') and hasattr(m, 'indice_key'):
                m.algo = algo

    def forward(self, feats: Tensor, occupied: Tensor) -> Tensor:
        """feats (B, C, X, Y, Z), occupied (B, X, Y, Z) bool -> refined (B, C, X, Y, Z)."""
        _check(type(self).__name__, feats, occupied, self.in_channels)
        B, C, X, Y, Z = feats.shape
        coords = occupied.nonzero()  # (K, 4) as (b, x, y, z)
        if coords.shape[0] == 0:
            return feats
        self._set_algo(feats.device)
        b, x, y, z = coords.unbind(1)
        flat = feats.flatten(2)  # (B, C, V) view
        v = (x * Y + y) * Z + z
        gathered = flat[b, :, v]  # (K, C)
        # torch.nonzero returns column-major strides; spconv reads the raw buffer
        sp = SparseConvTensor(self.in_proj(gathered), coords.int().contiguous(), [X, Y, Z], B)
        sp = self.blocks(sp)
        delta = self.out_proj(sp.features).to(feats.dtype)
        out = flat.clone()
        out[b, :, v] = gathered + delta
        return out.view(B, C, X, Y, Z)


@MODELS.register_module()
class DenseVoxelRefiner(BaseModule):
    """The network of :class:`SparseVoxelRefiner` run densely on every voxel.

    Args: as :class:`SparseVoxelRefiner` (3-D norms, no indice key); ``occupied`` is accepted
    for the same call signature and ignored (every voxel is refined).
    """

    def __init__(self,
                 in_channels: int = 256,
                 mid_channels: int = 64,
                 num_blocks: int = 2,
                 norm_cfg: dict = dict(type='BN3d', eps=1e-3, momentum=0.01),
                 zero_init_out: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if num_blocks < 1:
            raise ValueError(f'DenseVoxelRefiner: num_blocks must be >= 1, got {num_blocks}')
        self.in_channels = in_channels
        self.in_proj = nn.Conv3d(in_channels, mid_channels, 1)
        self.blocks = nn.Sequential(*[
            BasicBlock(mid_channels, mid_channels, conv_cfg=dict(type='Conv3d'),
                       norm_cfg=dict(norm_cfg)) for _ in range(num_blocks)
        ])
        self.out_proj = nn.Conv3d(mid_channels, in_channels, 1)
        if zero_init_out:
            nn.init.zeros_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, feats: Tensor, occupied: Optional[Tensor] = None) -> Tensor:
        """feats (B, C, X, Y, Z) -> refined (B, C, X, Y, Z)."""
        if occupied is not None:
            _check(type(self).__name__, feats, occupied, self.in_channels)
        return feats + self.out_proj(self.blocks(self.in_proj(feats)))
