"""TrackOcc(track_score_classes=...): the classes a query's track score is taken over.

The original scored tracks over its detector's default inst_class_ids [1, 2, 3, 4] (sign
included; its config never set them), measured by tools/parity/compare.py: with thing
classes [1, 2, 4] 3 of 41 tracks of the first streamed frame were not born."""
from types import SimpleNamespace

import torch
from mmengine.config import Config

from trackocc.models.detectors.trackocc import TrackOcc

ORIGINAL_WEIGHTS = 'configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ_original-weights.py'


def _record(classes, cls):
    owner = SimpleNamespace(track_score_classes=classes)
    tracks = SimpleNamespace()
    out = dict(thing_cls=[cls[None]], thing_centers=[torch.zeros(1, cls.shape[0], 6)],
               thing_embed=torch.zeros(1, cls.shape[0], 4))
    TrackOcc._record_frame(owner, tracks, out)
    return tracks.scores


def test_track_score_over_the_given_classes():
    cls = torch.full((2, 16), -5.0)
    cls[0, 3] = 2.0  # a sign-like query: only class 3 scores
    cls[1, 1] = 1.0
    with_sign = _record([1, 2, 3, 4], cls)
    things = _record([1, 2, 4], cls)
    assert torch.allclose(with_sign, torch.sigmoid(torch.tensor([2.0, 1.0])))
    assert torch.allclose(things, torch.sigmoid(torch.tensor([-5.0, 1.0])))


def test_original_weights_config_scores_like_the_original():
    cfg = Config.fromfile(ORIGINAL_WEIGHTS)
    assert list(cfg.model.track_score_classes) == [1, 2, 3, 4]
