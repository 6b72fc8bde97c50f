from .sparse_voxel_refiner import (DenseVoxelRefiner, SparseVoxelRefiner,
                                   occupied_from_semantics)

__all__ = ['SparseVoxelRefiner', 'DenseVoxelRefiner', 'occupied_from_semantics']
