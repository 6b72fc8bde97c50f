"""Panoptic merge of thing and stuff masks on constructed cases and against a loop version."""
import torch

from trackocc.models.heads import merge_panoptic

FREE = 15


def cls_row(label, prob):
    logit = torch.logit(torch.tensor(prob))
    row = torch.full((16, ), -10.0)
    row[label] = logit
    return row


def mask_row(on, n=10, value=6.0):
    row = torch.full((n, ), -value)
    row[list(on)] = value
    return row


def test_merge_constructed_masks():
    cls = torch.stack([
        cls_row(1, 0.9),   # vehicle track id 3 on voxels 0-2
        cls_row(2, 0.8),   # pedestrian track id 5 on voxels 2-4 (loses voxel 2: 2/3 < 0.7)
        cls_row(13, 0.7),  # road (stuff) on voxels 6-8
        cls_row(4, 0.2),   # low score: dropped
        cls_row(FREE, 0.99),  # free: dropped
        cls_row(10, 0.6),  # building on voxel 9, fully kept
    ])
    masks = torch.stack([mask_row([0, 1, 2]), mask_row([2, 3, 4]), mask_row([6, 7, 8]),
                         mask_row([5]), mask_row([5, 9]), mask_row([9])])
    ids = torch.tensor([3, 5, 0, 7, 0, 0])
    sem, inst = merge_panoptic(cls, masks, ids, FREE, score_thresh=0.3, overlap_thresh=0.7)
    assert sem.dtype == torch.int32 and inst.dtype == torch.int32
    assert sem.tolist() == [1, 1, 1, FREE, FREE, FREE, 13, 13, 13, 10]
    assert inst.tolist() == [3, 3, 3, 0, 0, 0, 0, 0, 0, 0]
    # with a looser overlap threshold the pedestrian keeps the voxels it wins
    sem, inst = merge_panoptic(cls, masks, ids, FREE, score_thresh=0.3, overlap_thresh=0.6)
    assert sem.tolist()[:5] == [1, 1, 1, 2, 2]
    assert inst.tolist()[:5] == [3, 3, 3, 5, 5]


def test_merge_nothing_kept_gives_free():
    sem, inst = merge_panoptic(torch.stack([cls_row(1, 0.1)]), torch.stack([mask_row([0])]),
                               torch.tensor([1]), FREE)
    assert sem.tolist() == [FREE] * 10 and inst.tolist() == [0] * 10


def loop_decision(cls, masks, free, score_thresh, overlap_thresh):
    """The reference's per-prediction loop: scores, labels, probabilities, each voxel's winner
    (row index; -1 when nothing is kept) and the rows it accepts."""
    scores, labels = cls.sigmoid().max(-1)
    probs = masks.sigmoid()
    kept = torch.nonzero((labels != free) & (scores > score_thresh)).flatten()
    winner = torch.full((masks.shape[1], ), -1)
    accepted = []
    if len(kept):
        winner = kept[(scores[kept][:, None] * probs[kept]).argmax(0)]
    for k in kept.tolist():
        area = (winner == k).sum().item()
        own = (probs[k] >= 0.5).sum().item()
        sel = ((winner == k) & (probs[k] >= 0.5)).sum().item()
        if area > 0 and own > 0 and sel > 0 and area / own >= overlap_thresh:
            accepted.append(k)
    return scores, labels, probs, winner, accepted


def loop_merge(cls, masks, ids, free, score_thresh, overlap_thresh):
    """The reference's loop merge: accepted rows keep the voxels they win in their own mask."""
    _, labels, probs, winner, accepted = loop_decision(cls, masks, free, score_thresh,
                                                       overlap_thresh)
    n = masks.shape[1]
    sem = torch.full((n, ), free, dtype=torch.int32)
    inst = torch.zeros(n, dtype=torch.int32)
    for k in accepted:
        sel = (winner == k) & (probs[k] >= 0.5)
        inst[sel] = int(ids[k])
        sem[sel] = int(labels[k])
    return sem, inst


def test_merge_matches_loop_on_random_inputs():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        num = int(torch.randint(1, 12, (1, ), generator=gen))
        cls = torch.randn(num, 16, generator=gen) * 3
        masks = torch.randn(num, 300, generator=gen) * 4
        ids = torch.randint(0, 50, (num, ), generator=gen)
        got = merge_panoptic(cls, masks, ids, FREE, 0.3, 0.7)
        want = loop_merge(cls, masks, ids, FREE, 0.3, 0.7)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_merge_fates_say_why_each_prediction_is_or_is_not_output():
    from trackocc.models.heads.panoptic_merge import MERGE_FATES, merge_fates
    cls = torch.stack([
        cls_row(1, 0.9),    # vehicle on voxels 0-3: output
        cls_row(2, 0.8),    # pedestrian on voxels 3-4: loses voxel 3 to the vehicle (1/2)
        cls_row(4, 0.2),    # low score
        cls_row(2, 0.9),    # confident, but no voxel with probability >= 0.5
        cls_row(1, 0.95),   # not valid (e.g. a dormant track)
        cls_row(13, 0.7),   # road (stuff) on voxels 6-8: output
    ])
    masks = torch.stack([mask_row(range(0, 4)), mask_row([3, 4]), mask_row([5]),
                         torch.full((10, ), -6.0), mask_row(range(10)), mask_row([6, 7, 8])])
    ids = torch.tensor([3, 5, 7, 8, 9, 0])
    valid = torch.tensor([True, True, True, True, False, True])
    args = (cls, [masks[:5], masks[5:]], ids, FREE, 0.3, 0.7)
    fates = merge_fates(*args, valid=valid)
    assert [MERGE_FATES[f] for f in fates['fate'].tolist()] == \
        ['output', 'overlap', 'low_score', 'empty_mask', 'not_valid', 'output']
    assert fates['labels'].tolist() == [1, 2, 4, 2, 1, 13]
    # the pedestrian's two voxels: one became vehicle, the other stays empty (tie -> first)
    assert fates['voxels_end_as'].tolist() == [-1, 1, -1, -1, -1, -1]
    # won area counts every voxel a prediction wins, in its own mask or not (voxels 5 and 9
    # belong to no kept prediction's mask and go to the highest score, the vehicle)
    assert fates['own_area'].tolist()[:2] == [4, 2] and fates['won_area'].tolist()[:2] == [6, 1]
    # each prediction's highest voxel probability (the empty mask's is sigmoid(-6))
    want_max = torch.tensor([6.0, 6.0, 6.0, -6.0, 6.0, 6.0]).sigmoid()
    assert torch.allclose(fates['max_prob'], want_max)
    # the predictions said to be output are exactly the segments of the merge
    _, instances = merge_panoptic(*args, valid=valid)
    out_ids = set(instances.unique().tolist()) - {0}
    assert out_ids == {int(i) for i, f in zip(ids, fates['fate']) if f == 0 and i > 0}


def cascade_case():
    """A vehicle that keeps 4 of its 5 voxels, and two confident, overlapping predictions that
    split voxels 4-9 between them and are both dropped (3 of 6 each)."""
    cls = torch.stack([cls_row(1, 0.9), cls_row(2, 0.95), cls_row(2, 0.94)])
    masks = torch.stack([
        mask_row(range(0, 5)),
        torch.tensor([-6.0] * 4 + [6.0] * 3 + [2.0] * 3),
        torch.tensor([-6.0] * 4 + [2.0] * 3 + [6.0] * 3),
    ])
    return cls, masks, torch.tensor([3, 5, 6])


def test_merge_refill_gives_dropped_predictions_voxels_to_kept_claimants():
    from trackocc.models.heads.panoptic_merge import MERGE_FATES, merge_fates
    cls, masks, ids = cascade_case()
    sem, inst = merge_panoptic(cls, masks, ids, FREE, 0.3, 0.7)
    # the reference: voxel 4 went to a dropped prediction and stays free
    assert sem.tolist() == [1, 1, 1, 1] + [FREE] * 6 and inst.tolist() == [3] * 4 + [0] * 6
    sem, inst = merge_panoptic(cls, [masks[:1], masks[1:]], ids, FREE, 0.3, 0.7, refill=True)
    # refilled: the vehicle claims voxel 4; voxels 5-9 have no kept claimant
    assert sem.tolist() == [1] * 5 + [FREE] * 5 and inst.tolist() == [3] * 5 + [0] * 5
    # which predictions are output does not change
    for refill in (False, True):
        fates = merge_fates(cls, masks, ids, FREE, 0.3, 0.7, refill=refill)
        assert [MERGE_FATES[f] for f in fates['fate'].tolist()] == \
            ['output', 'overlap', 'overlap']


def loop_merge_refill(cls, masks, ids, free, score_thresh, overlap_thresh):
    """The loop merge, then each voxel a dropped prediction won to the best kept claimant."""
    sem, inst = loop_merge(cls, masks, ids, free, score_thresh, overlap_thresh)
    scores, labels, probs, winner, accepted = loop_decision(cls, masks, free, score_thresh,
                                                            overlap_thresh)
    for v in range(masks.shape[1]):
        if int(winner[v]) in accepted:
            continue
        best, who = 0.0, None
        for k in accepted:
            value = float(scores[k] * probs[k, v])
            if probs[k, v] >= 0.5 and value > best:
                best, who = value, k
        if who is not None:
            sem[v], inst[v] = int(labels[who]), int(ids[who])
    return sem, inst


def test_merge_refill_matches_loop_on_random_inputs():
    gen = torch.Generator().manual_seed(1)
    changed = 0
    for _ in range(20):
        num = int(torch.randint(2, 12, (1, ), generator=gen))
        cls = torch.randn(num, 16, generator=gen) * 3
        # intervals of voxels with noisy logits: overlapping objects, some dropped
        start = torch.randint(0, 250, (num, 1), generator=gen)
        width = torch.randint(10, 80, (num, 1), generator=gen)
        voxel = torch.arange(300)[None]
        inside = (voxel >= start) & (voxel < start + width)
        masks = torch.where(inside, 3.0, -6.0) + torch.randn(num, 300, generator=gen) * 2
        ids = torch.randint(0, 50, (num, ), generator=gen)
        split = num // 2  # thing and stuff rows as two blocks
        got = merge_panoptic(cls, [masks[:split], masks[split:]], ids, FREE, 0.3, 0.7,
                             refill=True)
        want = loop_merge_refill(cls, masks, ids, FREE, 0.3, 0.7)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        changed += not torch.equal(got[0], merge_panoptic(cls, masks, ids, FREE, 0.3, 0.7)[0])
    assert changed >= 5  # the cases do exercise the refill


def test_detector_passes_merge_refill(monkeypatch):
    """``TrackOcc(merge_refill=...)`` reaches the frame's merge (off by default)."""
    import trackocc.models.heads.panoptic_merge as merge_module
    from test_detector import build, images, make_clip, make_frame, tiny_cfg
    seen = []

    def recording_merge(**kwargs):
        seen.append(kwargs['refill'])
        return merge_panoptic(**kwargs)

    # the detector's PanopticMerge stage calls the module's function
    monkeypatch.setattr(merge_module, 'merge_panoptic', recording_merge)
    for option in (None, True):
        cfg = tiny_cfg()
        if option is not None:
            cfg['merge_refill'] = option
        model = build(cfg).eval()
        with torch.no_grad():
            model.predict(dict(imgs=images(1, 1, seed=0)),
                          [make_clip([make_frame(0, start=True, ego_x=0.0)])])
    assert seen == [False, True]
