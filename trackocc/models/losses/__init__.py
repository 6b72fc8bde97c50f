"""Losses of the tracking head: clip matcher (thing/track queries), stuff mask loss and
their shared target builders."""
from .clip_matcher import ClipMatcher
from .mask_losses import CenterL1Cost, hungarian_match, visible_mask_losses
from .stuff_mask_loss import StuffMaskLoss
from .thing_targets import build_thing_targets, stuff_targets, voxel_centers

__all__ = [
    'CenterL1Cost', 'ClipMatcher', 'StuffMaskLoss', 'build_thing_targets', 'stuff_targets',
    'voxel_centers', 'hungarian_match', 'visible_mask_losses'
]
