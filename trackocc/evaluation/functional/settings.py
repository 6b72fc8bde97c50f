"""Settings of the OccSTQ evaluation: protocol choices and the reference evaluator's quirks.

The defaults reproduce the original TrackOcc evaluator (``OccPanoptic4DEval`` in
``loaders/track_metrics.py`` driven by ``loaders/track_waymo_occ_dataset.py``) number for number.
:meth:`OccSTQSettings.strict` turns every quirk off. See ``docs/occstq.md`` for the details.
"""
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, Optional, Tuple

from trackocc.structures.occ_classes import (FREE_CLASS, MOTORCYCLE, NUM_CLASSES,
                                             OCC_CLASS_NAMES, SIGN)

#: What ``empty_aq`` may be set to.
EMPTY_AQ_MODES = ('nan', 'vacuous')


@dataclass(frozen=True)
class OccSTQSettings:
    """How OccSTQ is computed.

    Protocol (not quirks, the same in both presets):
        num_classes: number of semantic classes (16).
        ignore_classes: gt classes whose voxels are removed before any panoptic counting and
            whose confusion columns are zeroed (motorcycle 9, free 15).
        zero_instance_classes: gt classes whose instance ids are set to 0 before scoring
            (the original zeroes classes (1, 2, 3, 4) not in its ``inst_class_ids`` = (1, 2, 4),
            i.e. sign 3).
        zero_instances_in_pred: also zero predicted instance ids of voxels predicted as one of
            ``zero_instance_classes`` (the reference leaves predictions untouched; such ids
            then still count as predicted tracks).
        use_mask_camera / use_infov: voxels are evaluated where ``mask_camera & infov``.

    Quirks of the reference (``True``/default value = reproduce the reference):
        min_points: a gt tube (one gt id in one class, voxels summed over the whole
            sequence, as the reference stacks a sequence before counting) counts only with
            more than ``min_points`` voxels.
        skip_instance_id_one: instance id 1 is dropped from gt tubes and predicted tracks
            (a 4D-PLS leftover where 1 meant "no instance").
        intersection_ignores_pred_class: a predicted instance voxel intersects a gt tube of
            class c whatever class was predicted for it.
        pred_size_pooled_over_classes: a predicted track's size is one number summed over
            every non-ignored predicted class (not per class).
        miou_over_all_classes: mIoU averages all non-ignored classes, absent ones as 0.
        empty_aq: 'nan' = AQ (and OccSTQ) is NaN when no gt tube exists; 'vacuous' = AQ is
            1.0 then if no predicted track voxel was evaluated either, else 0.0.
    """

    num_classes: int = NUM_CLASSES
    ignore_classes: Tuple[int, ...] = (MOTORCYCLE, FREE_CLASS)
    zero_instance_classes: Tuple[int, ...] = (SIGN,)
    zero_instances_in_pred: bool = False
    use_mask_camera: bool = True
    use_infov: bool = True
    min_points: int = 2
    skip_instance_id_one: bool = True
    intersection_ignores_pred_class: bool = True
    pred_size_pooled_over_classes: bool = True
    miou_over_all_classes: bool = True
    empty_aq: str = 'nan'
    class_names: Tuple[str, ...] = field(default=OCC_CLASS_NAMES)

    def __post_init__(self):
        object.__setattr__(self, 'ignore_classes', tuple(int(c) for c in self.ignore_classes))
        object.__setattr__(self, 'zero_instance_classes',
                           tuple(int(c) for c in self.zero_instance_classes))
        object.__setattr__(self, 'class_names', tuple(str(c) for c in self.class_names))
        if self.num_classes < 1:
            raise ValueError(f'OccSTQSettings: num_classes must be >= 1, got {self.num_classes}')
        for name in ('ignore_classes', 'zero_instance_classes'):
            bad = [c for c in getattr(self, name) if not 0 <= c < self.num_classes]
            if bad:
                raise ValueError(f'OccSTQSettings: {name} {bad} outside [0, {self.num_classes})')
        if len(self.class_names) != self.num_classes:
            raise ValueError(f'OccSTQSettings: {len(self.class_names)} class_names for '
                             f'num_classes={self.num_classes}')
        if self.empty_aq not in EMPTY_AQ_MODES:
            raise ValueError(f'OccSTQSettings: empty_aq must be one of {EMPTY_AQ_MODES}, '
                             f'got {self.empty_aq!r}')
        if self.min_points < 0:
            raise ValueError(f'OccSTQSettings: min_points must be >= 0, got {self.min_points}')

    @property
    def include_classes(self) -> Tuple[int, ...]:
        """Classes that are scored (all but ``ignore_classes``)."""
        return tuple(c for c in range(self.num_classes) if c not in self.ignore_classes)

    @classmethod
    def reference(cls, **overrides) -> 'OccSTQSettings':
        """The original evaluator's behaviour (the default)."""
        return cls(**overrides)

    @classmethod
    def strict(cls, **overrides) -> 'OccSTQSettings':
        """Every quirk off: per-class tracks, all ids, present-class mIoU, every gt tube."""
        base = dict(min_points=0, skip_instance_id_one=False, zero_instances_in_pred=True,
                    intersection_ignores_pred_class=False,
                    pred_size_pooled_over_classes=False, miou_over_all_classes=False,
                    empty_aq='vacuous')
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_config(cls, cfg: Optional[Any] = None) -> 'OccSTQSettings':
        """Build from ``None`` (reference), ``'reference'``, ``'strict'``, a settings object or a
        dict with an optional ``preset`` key plus field overrides."""
        if cfg is None or isinstance(cfg, OccSTQSettings):
            return cfg if cfg is not None else cls()
        if isinstance(cfg, str):
            cfg = dict(preset=cfg)
        if not isinstance(cfg, dict):
            raise TypeError(f'OccSTQSettings.from_config: expected None, str, dict or '
                            f'OccSTQSettings, got {type(cfg).__name__}')
        cfg = dict(cfg)
        preset = cfg.pop('preset', 'reference')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise KeyError(f'OccSTQSettings: unknown settings {unknown}; known: {sorted(known)}')
        if preset == 'reference':
            return cls.reference(**cfg)
        if preset == 'strict':
            return cls.strict(**cfg)
        raise ValueError(f"OccSTQSettings: preset must be 'reference' or 'strict', got {preset!r}")

    def replace(self, **changes) -> 'OccSTQSettings':
        return replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out
