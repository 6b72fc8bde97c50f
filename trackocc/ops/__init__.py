"""Custom ops: compiled kernels (``trackocc._ext``) with pure-PyTorch references.

Each op dispatches to the compiled CUDA kernel for CUDA tensors and to the reference on CPU;
``impl='pytorch'`` / ``impl='ext'`` force one. See docs/ops.md.
"""
from .bev_pool import (BEVPoolRanks, BEVPoolV2Function, bev_pool_v2, bev_pool_v2_pytorch,
                       pad_pooling_ranks, voxel_pooling_prepare)
from .ext_loader import ext_available, ext_with_cuda
from .msda_2d import multi_scale_deformable_attn_2d
from .msda_3d import (MultiScaleDeformableAttn3DFunction, multi_scale_deformable_attn_3d,
                      multi_scale_deformable_attn_3d_pytorch)
from .panoptic_merge import MergeStats, panoptic_merge_stats, panoptic_merge_stats_pytorch

__all__ = [
    'BEVPoolRanks', 'BEVPoolV2Function', 'bev_pool_v2', 'bev_pool_v2_pytorch',
    'pad_pooling_ranks', 'voxel_pooling_prepare', 'ext_available', 'ext_with_cuda',
    'MultiScaleDeformableAttn3DFunction', 'multi_scale_deformable_attn_2d',
    'multi_scale_deformable_attn_3d',
    'multi_scale_deformable_attn_3d_pytorch', 'MergeStats', 'panoptic_merge_stats',
    'panoptic_merge_stats_pytorch'
]
