"""Shared facts of the data contract (``docs/data_contract.md``), one module each, and the
typed occupancy data sample.

The fact modules (class table, cameras, grid geometry, sample index, occupancy files) need
numpy only and import nothing else of trackocc but the standard-library file writer
(:mod:`trackocc.utils.output_files`), so every layer (datasets, models, evaluation,
visualisation, tools, configs) can import them. :class:`OccupancyData`,
:class:`OccDataSample` and :class:`ClipDataSample` need mmengine / mmdet(3d) and are imported
on first use.
"""
import importlib

from .cameras import CAMERA_FOLDERS, CAMERA_NAMES, SPATIAL_CAMERA_ORDER
from .occ_classes import (BOX_LABEL_TO_OCC, CLASS_COLORS, FREE_CLASS, INSTANCE_CLASSES,
                          NUM_CLASSES, OCC_CLASS_NAMES, OCC_TO_BOX_LABEL, STUFF_CLASSES,
                          THING_CLASSES)
from .occ_grid import (GRID_MAX, GRID_MIN, GRID_SHAPE, NUM_VOXELS, PC_RANGE, VOXEL_SIZE,
                       grid_geometry, voxel_axes, voxel_centres)
from .occ_npz import (EVAL_GT_KEYS, GT_KEYS, OCC_DIR, OCC_FILE_SUFFIX, OCC_FILE_TEMPLATE,
                      OccFileError, check_gt_arrays, find_occ_files, load_gt_frame,
                      load_pred_frame, occ_file_path, read_occ_npz, write_pred_frame,
                      find_pred_files, sequence_frame_files)
from .occ_voxel_counts import (VISIBILITY_RULES, VOXEL_COUNTS_KEY, check_voxel_counts,
                               occupancy_voxel_counts)
from .sample_index import (INFO_FILES, SPLIT_IDS, SPLITS, SampleIndex, make_sample_idx,
                           split_sample_idx)

_LAZY = {'OccupancyData': '.occ_data_sample', 'OccDataSample': '.occ_data_sample',
         'ClipDataSample': '.clip_data_sample'}

__all__ = [
    'CAMERA_FOLDERS', 'CAMERA_NAMES', 'SPATIAL_CAMERA_ORDER', 'BOX_LABEL_TO_OCC',
    'CLASS_COLORS', 'FREE_CLASS', 'INSTANCE_CLASSES', 'NUM_CLASSES', 'OCC_CLASS_NAMES',
    'OCC_TO_BOX_LABEL', 'STUFF_CLASSES', 'THING_CLASSES', 'GRID_MAX', 'GRID_MIN', 'GRID_SHAPE',
    'NUM_VOXELS', 'PC_RANGE', 'VOXEL_SIZE', 'grid_geometry', 'voxel_axes', 'voxel_centres',
    'EVAL_GT_KEYS',
    'GT_KEYS', 'OCC_DIR', 'OCC_FILE_SUFFIX', 'OCC_FILE_TEMPLATE', 'OccFileError',
    'check_gt_arrays', 'find_occ_files',
    'load_gt_frame', 'load_pred_frame', 'occ_file_path', 'read_occ_npz', 'write_pred_frame',
    'find_pred_files', 'sequence_frame_files',
    'VISIBILITY_RULES', 'VOXEL_COUNTS_KEY', 'check_voxel_counts', 'occupancy_voxel_counts',
    'INFO_FILES', 'SPLIT_IDS', 'SPLITS', 'SampleIndex', 'make_sample_idx', 'split_sample_idx',
    *_LAZY
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
