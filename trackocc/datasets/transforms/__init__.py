"""Data transforms (registered in ``trackocc.registry.TRANSFORMS``)."""
from .depth_maps import PointsToMultiViewDepth, points_to_depth_map
from .formatting import PackTrackOccInputs
from .loading import LoadLiDARPoints, LoadMultiViewImages, LoadPanopticOccupancy
from .multiview_augmentation import MultiViewImageAugmentation, aug_params_to_affine
from .pil_augmentation import pil_resize_crop_flip_rotate

__all__ = [
    'LoadMultiViewImages', 'LoadLiDARPoints', 'LoadPanopticOccupancy', 'MultiViewImageAugmentation',
    'PointsToMultiViewDepth', 'PackTrackOccInputs', 'aug_params_to_affine', 'points_to_depth_map',
    'pil_resize_crop_flip_rotate'
]
