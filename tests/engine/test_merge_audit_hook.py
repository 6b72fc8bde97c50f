"""MergeAuditHook / MergeAudit: what the panoptic merge did with every track, per class."""
import json
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'models'))
from test_detector import NUM_QUERIES, OCC, build, images, make_clip, make_frame  # noqa: E402

from trackocc.engine.hooks import MergeAuditHook  # noqa: E402
from trackocc.engine.hooks.merge_audit_hook import MergeAudit, max_prob_bin  # noqa: E402
from trackocc.structures.occ_classes import OCC_CLASS_NAMES  # noqa: E402

N = OCC[0] * OCC[1] * OCC[2]


def logits_row(label, prob):
    row = torch.full((16, ), -10.0)
    row[label] = torch.logit(torch.tensor(prob))
    return row


def mask(on):
    m = torch.full((N, ), -6.0)
    m[list(on)] = 6.0
    return m.view(OCC)


def test_audit_counts_each_track_with_its_fate():
    model = build().eval()
    tracks = model._empty_tracks()
    # 0: vehicle, output; 1: pedestrian whose mask the vehicle takes; 2: dormant (score below
    # the tracker's filter threshold); 3: empty mask; 4-5: no id (not tracks, not counted)
    tracks.obj_idxes = torch.tensor([0, 1, 2, 3, -1, -1])
    tracks.scores = torch.tensor([0.9, 0.8, 0.1, 0.9, 0.9, 0.9])
    cls = torch.stack([logits_row(1, 0.9), logits_row(2, 0.8), logits_row(2, 0.9),
                       logits_row(4, 0.9), logits_row(1, 0.9), logits_row(1, 0.9)])
    faint = torch.full(OCC, -6.0)
    faint.view(-1)[30] = torch.logit(torch.tensor(0.35))  # highest probability 0.35 < 0.5
    masks = torch.stack([mask(range(0, 4)), mask([3, 4]), mask([10]), faint,
                         mask([20]), mask([21])])
    # stuff: road output; walkable below the score threshold; vegetation whose mask the road
    # query takes; one query predicting free; a confident pole whose mask stays below 0.5
    stuff_cls = torch.stack([logits_row(13, 0.7), logits_row(14, 0.25), logits_row(11, 0.6),
                             logits_row(15, 0.9), logits_row(6, 0.95)])
    thin = torch.full(OCC, -6.0)
    thin.view(-1)[150:153] = torch.logit(torch.tensor(0.45))
    stuff_masks = torch.stack([mask(range(100, 120)), mask(range(130, 140)),
                               mask(range(100, 104)), torch.full(OCC, -6.0), thin])
    out = dict(thing_cls=[cls[None]], thing_masks=[masks[None]], stuff_cls=[stuff_cls[None]],
               stuff_masks=[stuff_masks[None]])
    audit = MergeAudit(OCC_CLASS_NAMES)
    audit.record(model, tracks, out)
    summary = audit.summary()
    assert summary['frames'] == 1
    per_class = summary['per_class']
    assert set(per_class) == {'vehicle', 'pedestrian', 'cyclist'}
    assert per_class['vehicle']['output'] == 1 and per_class['vehicle']['track_frames'] == 1
    ped = per_class['pedestrian']
    assert (ped['track_frames'], ped['overlap'], ped['dormant']) == (2, 1, 1)
    assert ped['voxels_end_as'] == {'vehicle': 1}
    assert per_class['cyclist']['empty_mask'] == 1
    # how close the empty mask came to the threshold: every bin listed, in order
    assert per_class['cyclist']['empty_mask_max_prob'] == {
        '0.0-0.1': 0, '0.1-0.2': 0, '0.2-0.3': 0, '0.3-0.4': 1, '0.4-0.5': 0}
    assert sum(per_class['vehicle']['empty_mask_max_prob'].values()) == 0
    stuff = summary['stuff_per_class']
    assert set(stuff) == {'road', 'walkable', 'vegetation', 'free', 'pole'}
    assert (stuff['road']['output'], stuff['road']['query_frames']) == (1, 1)
    assert stuff['walkable']['low_score'] == 1
    assert stuff['walkable']['max_score'] == pytest.approx(0.25, abs=1e-4)
    assert stuff['vegetation']['overlap'] == 1
    assert stuff['vegetation']['voxels_end_as'] == {'road': 1}
    assert stuff['free']['low_score'] == 1
    assert (stuff['pole']['empty_mask'], stuff['pole']['query_frames']) == (1, 1)
    assert stuff['pole']['empty_mask_max_prob'] == {
        '0.0-0.1': 0, '0.1-0.2': 0, '0.2-0.3': 0, '0.3-0.4': 0, '0.4-0.5': 1}
    assert sum(stuff['road']['empty_mask_max_prob'].values()) == 0
    # two audits add up (ranks)
    total = audit.merge([audit])
    assert total.frames == 2 and total.summary()['per_class']['pedestrian']['overlap'] == 2
    assert total.summary()['per_class']['cyclist']['empty_mask_max_prob']['0.3-0.4'] == 2
    assert 'pedestrian' in total.table() and '0.3-0.4 2' in total.table()
    assert total.summary()['stuff_per_class']['vegetation']['overlap'] == 2
    assert total.summary()['stuff_per_class']['walkable']['max_score'] == \
        pytest.approx(0.25, abs=1e-4)
    assert 'walkable' in total.table()
    assert total.summary()['stuff_per_class']['pole']['empty_mask_max_prob']['0.4-0.5'] == 2
    assert '0.4-0.5 2' in total.table().split('stuff queries')[1]


def test_max_prob_bins_cover_zero_to_one_half():
    assert max_prob_bin(0.0) == '0.0-0.1' and max_prob_bin(0.1) == '0.1-0.2'
    assert max_prob_bin(0.4999) == '0.4-0.5'
    assert max_prob_bin(0.5) == '0.4-0.5'  # a logit just below 0 rounds to 0.5 in float32
    with pytest.raises(ValueError, match='above 0.5'):
        max_prob_bin(0.6)


def test_hook_audits_every_streamed_track_and_detaches(tmp_path):
    torch.manual_seed(0)
    model = build().eval()
    model.tracker.score_thresh = 0.0  # random weights: let every query become a track
    runner = SimpleNamespace(model=model, test_dataloader=SimpleNamespace(
        dataset=SimpleNamespace(metainfo=dict(classes=OCC_CLASS_NAMES))))
    out_file = tmp_path / 'audit' / 'merge_audit.json'
    hook = MergeAuditHook(out_file=str(out_file))
    hook.before_test(runner)
    imgs = images(1, 3, seed=1)
    with_id, segments = 0, 0
    with torch.no_grad():
        for t in range(3):
            clip = make_clip([make_frame(t, start=(t == 0))])
            model.predict(dict(imgs=imgs[:, t:t + 1]), [clip])
            with_id += int((model.stream_state['pending'].obj_idxes >= 0).sum())
            instances = clip.video_data_samples[0].pred_occ.instances
            segments += len(set(instances.unique().tolist()) - {0})
    hook.after_test(runner)
    summary = json.loads(out_file.read_text())
    rows = summary['per_class'].values()
    assert summary['frames'] == 3
    assert with_id > 0 and sum(r['track_frames'] for r in rows) == with_id
    assert sum(r['output'] for r in rows) == segments
    # detached after the test: streaming on does not change the audit
    with torch.no_grad():
        model.predict(dict(imgs=imgs[:, :1]), [make_clip([make_frame(0, start=True)])])
    assert hook.audit.frames == 3
    assert NUM_QUERIES == len(model._empty_tracks().obj_idxes)
