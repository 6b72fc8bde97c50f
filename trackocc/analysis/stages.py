"""The stages of a TrackOcc frame and a timer that sums each stage's time per frame."""
import statistics
from typing import Dict, List, Sequence, Tuple

import torch

from .timing import DeviceClock

# stage name -> detector sub-modules whose calls it sums (missing or None ones are skipped)
STAGES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ('image_backbone_neck', ('img_backbone', 'img_neck')),
    ('view_transform', ('img_view_transformer',)),
    ('volume_encoder', ('volume_encoder_backbone', 'volume_encoder_neck')),
    ('occupancy_encoder', ('occ_encoder',)),
    ('refiner', ('refiner',)),
    ('decoder_head', ('pts_bbox_head',)),
    ('tracking', ('query_interaction', 'memory_bank', 'track_carry')),
    # with fixed track rows the merge runs inside the tracks' settling (the tracker's update,
    # which the merge stage then includes); the detector reports the merge itself otherwise
    ('panoptic_merge', ('track_settle', )),
)


def stage_modules(model, stages=STAGES) -> Dict[str, List[Tuple[str, torch.nn.Module]]]:
    """``{stage: [(attribute, module), ...]}`` for the stages the model has modules for."""
    found = {}
    for stage, attrs in stages:
        mods = [(a, getattr(model, a, None)) for a in attrs]
        mods = [(a, m) for a, m in mods if isinstance(m, torch.nn.Module)]
        if mods:
            found[stage] = mods
    return found


class StageTimer:
    """Marks the start and end of every call of the detector's stage modules (forward
    pre-/post-hooks) and of the stages the detector reports itself (its
    ``register_stage_callback``, e.g. ``panoptic_merge``), and sums them per stage.

    Args:
        model (TrackOcc): the detector (hooks are added to it until :meth:`remove`).
        clock (DeviceClock): where the marks come from.
        stages: module stages, as :data:`STAGES`.
    """

    def __init__(self, model, clock: DeviceClock, stages: Sequence = STAGES):
        self.clock = clock
        self.marks: Dict[str, List[list]] = {}
        self._depth: Dict[str, int] = {}  # calls of a stage in progress
        self._handles = []
        for stage, mods in stage_modules(model, stages).items():
            self.marks[stage] = []
            for _, module in mods:
                self._handles.append(module.register_forward_pre_hook(
                    lambda *_, s=stage: self._event(s, 'start')))
                self._handles.append(module.register_forward_hook(
                    lambda *_, s=stage: self._event(s, 'end')))
        for stage in getattr(model, 'CALLBACK_STAGES', ()):
            self.marks[stage] = []
        if hasattr(model, 'register_stage_callback'):
            self._handles.append(model.register_stage_callback(self._event))

    def _event(self, stage: str, event: str) -> None:
        # a stage module called inside another of the same stage (the memory bank inside the
        # track carry) is part of the outer call's time: only the outermost call is marked
        depth = self._depth.get(stage, 0)
        if event == 'start':
            self._depth[stage] = depth + 1
            if depth == 0:
                self.marks.setdefault(stage, []).append([self.clock.mark(), None])
        else:
            self._depth[stage] = depth - 1
            if depth == 1:
                self.marks[stage][-1][1] = self.clock.mark()

    def reset(self) -> None:
        """Forget the marks (call before each frame)."""
        for marks in self.marks.values():
            marks.clear()
        self._depth.clear()

    def collect(self) -> Dict[str, float]:
        """Milliseconds per stage since :meth:`reset` (synchronises the device)."""
        self.clock.sync()
        return {s: sum(self.clock.ms(a, b) for a, b in m if b is not None)
                for s, m in self.marks.items()}

    def remove(self) -> None:
        """Remove every hook and callback from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def mean_stage_ms(stages: List[Dict[str, float]], totals: List[float]) -> Dict[str, float]:
    """Mean milliseconds per stage over frames (one dict per frame) and ``'other'``: the mean
    frame time (``totals``) not spent in a stage."""
    stage_ms = {s: statistics.fmean(d[s] for d in stages) for s in stages[0]}
    stage_ms['other'] = max(statistics.fmean(totals) - sum(stage_ms.values()), 0.0)
    return stage_ms
