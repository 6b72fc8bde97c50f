"""numpy OccSTQ core: hand-computed values, each reference quirk and its switch, streaming
and merging of partial states. (Numbers of the original evaluator: test_occstq_vectors.py.)"""
import math
import os.path as osp
import pickle

import numpy as np
import pytest

from trackocc.evaluation import functional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


core = functional
Settings = core.OccSTQSettings
N = 64  # voxels of the toy frames (flat)
ROAD, VEHICLE, PED, SIGN, MOTO, FREE = 13, 1, 2, 3, 9, 15


def frame(objects=(), pred_objects=None, pred_sem_override=None):
    """Flat toy frame: road everywhere; objects = [(class, id, voxel indices)]. Predictions
    copy gt unless ``pred_objects`` is given; ``pred_sem_override`` = {voxel: class}."""
    gs = np.full(N, ROAD, np.uint8)
    gi = np.zeros(N, np.int32)
    for cls, iid, vox in objects:
        gs[list(vox)], gi[list(vox)] = cls, iid
    ps, pi = gs.copy(), gi.astype(np.int16)
    if pred_objects is not None:
        ps, pi = np.full(N, ROAD, np.uint8), np.zeros(N, np.int16)
        for cls, iid, vox in pred_objects:
            ps[list(vox)], pi[list(vox)] = cls, iid
    for vox, cls in (pred_sem_override or {}).items():
        ps[vox] = cls
    return ps, pi, gs, gi


def score(frames, settings=None, mask=None):
    settings = settings or Settings()
    acc = core.SequenceAccumulator(0, settings)
    for i, fr in enumerate(frames):
        acc.add_frame(*fr, mask=mask, frame_idx=i)
    return core.summarize([acc.close()], settings)


def test_known_value_id_switch():
    # one vehicle tube of 8 voxels over 2 frames, predicted as two tracks of 4 (an id switch)
    frames = [frame([(VEHICLE, 5, range(4))], [(VEHICLE, 7, range(4))]),
              frame([(VEHICLE, 5, range(4))], [(VEHICLE, 8, range(4))])]
    res = score(frames)
    # AQ = 1/|g| * sum_p |p∩g| IoU(p,g) = 1/8 * 2 * (4 * 4/8)
    assert res['AQ'] == pytest.approx(0.5, abs=1e-12)
    assert res['mIoU'] == pytest.approx(2 / 14, abs=1e-12)  # road and vehicle perfect, 12 absent
    assert res['OccSTQ'] == pytest.approx(math.sqrt(0.5 * 2 / 14), abs=1e-12)
    assert res['num_tubes'][VEHICLE] == 1
    assert res['per_class_aq'][VEHICLE] == pytest.approx(0.5)


def test_quirk_instance_id_one():
    frames = [frame([(VEHICLE, 1, range(5))])]
    assert math.isnan(score(frames)['AQ'])  # id 1 is no tube in the reference
    res = score(frames, Settings(skip_instance_id_one=False))
    assert res['AQ'] == 1.0 and res['num_tubes'][VEHICLE] == 1


def test_quirk_intersection_ignores_pred_class():
    # pred track 7 covers gt tube 5 (4 voxels) but two voxels are predicted pedestrian
    frames = [frame([(VEHICLE, 5, range(4))], [(VEHICLE, 7, range(2)), (PED, 7, range(2, 4))])]
    assert score(frames)['AQ'] == pytest.approx(1.0)  # I=4, |p|=4 (pooled)
    res = score(frames, Settings(intersection_ignores_pred_class=False))
    assert res['AQ'] == pytest.approx(1 / 4 * 2 * (2 / 6))  # I=2, |p|=4 pooled
    assert score(frames, Settings.strict())['AQ'] == pytest.approx(1 / 4 * 2 * (2 / 4))


def test_quirk_pred_size_pooled_over_classes():
    # track 7 = the 4 tube voxels (vehicle) + 4 road voxels predicted pedestrian
    frames = [frame([(VEHICLE, 5, range(4))], [(VEHICLE, 7, range(4)), (PED, 7, range(4, 8))])]
    assert score(frames)['AQ'] == pytest.approx(1 / 4 * 4 * (4 / 8))  # |p| = 8
    assert score(frames, Settings(pred_size_pooled_over_classes=False))['AQ'] == 1.0


def test_quirk_miou_over_all_classes():
    frames = [frame([(VEHICLE, 5, range(4))])]
    assert score(frames)['mIoU'] == pytest.approx(2 / 14)
    assert score(frames, Settings(miou_over_all_classes=False))['mIoU'] == 1.0


def test_quirk_empty_aq():
    empty = [frame()]
    res = score(empty)
    assert math.isnan(res['AQ']) and math.isnan(res['OccSTQ']) and res['mIoU'] > 0
    assert score(empty, Settings(empty_aq='vacuous'))['AQ'] == 1.0
    false_track = [frame([], [(VEHICLE, 4, range(3))])]
    assert score(false_track, Settings(empty_aq='vacuous'))['AQ'] == 0.0


def test_quirk_min_points_counts_the_whole_sequence():
    # one voxel per frame: a tube of 3 voxels over 3 frames counts (> 2), of 2 does not
    three = [frame([(VEHICLE, 5, [f])]) for f in range(3)]
    assert score(three)['num_tubes'][VEHICLE] == 1
    assert math.isnan(score(three[:2])['AQ'])
    assert score(three[:2], Settings(min_points=0))['AQ'] == 1.0


def test_sign_instances_zeroed_and_ignored_classes():
    frames = [frame([(SIGN, 9, range(5)), (MOTO, 6, range(5, 10))])]
    res = score(frames)
    assert math.isnan(res['AQ']) and res['num_tubes'][SIGN] == 0 and res['num_tubes'][MOTO] == 0
    res = score(frames, Settings(zero_instance_classes=()))
    assert res['num_tubes'][SIGN] == 1 and res['AQ'] == 1.0 and res['num_tubes'][MOTO] == 0
    # the ignored class gets no IoU credit: its column is zeroed
    assert res['per_class_iou'][MOTO] == 0.0
    # predicted sign ids still count as tracks in the reference, not in strict mode
    acc = core.SequenceAccumulator(0, Settings())
    acc.add_frame(*frames[0])
    assert acc.close().num_pred_tracks == 1
    acc = core.SequenceAccumulator(0, Settings.strict())
    acc.add_frame(*frames[0])
    assert acc.close().num_pred_tracks == 0


def test_mask_equals_dropping_voxels():
    rng = np.random.default_rng(0)
    frames = [random_frame(rng, N) for _ in range(3)]
    mask = rng.random(N) < 0.6
    masked = score(frames, mask=mask)
    cut = score([tuple(a[mask] for a in fr) for fr in frames])
    for key in ('OccSTQ', 'AQ', 'mIoU'):
        assert masked[key] == pytest.approx(cut[key], abs=1e-12, nan_ok=True)


def test_strict_gt_vs_gt_is_one():
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(4):
        _, _, gs, gi = random_frame(rng, 4000)
        frames.append((gs, gi.astype(np.int16), gs, gi))
    res = score(frames, Settings.strict())
    assert res['OccSTQ'] == 1.0 and res['AQ'] == 1.0 and res['mIoU'] == 1.0
    assert sum(res['num_tubes']) > 3
    assert score(frames)['OccSTQ'] < 1.0  # the reference's quirks keep it below 1


def random_frame(rng, n):
    gs = rng.integers(0, 16, n).astype(np.uint8)
    gi = np.zeros(n, np.int32)
    for gid in range(1, 8):  # ids on things, stuff, ignored classes; shared across classes
        vox = rng.choice(n, size=rng.integers(1, max(2, n // 10)), replace=False)
        gi[vox] = gid
        if rng.random() < 0.7:
            gs[vox] = rng.choice([VEHICLE, PED, 4, SIGN, MOTO, 0])
    ps = gs.copy()
    noise = rng.random(n) < 0.2
    ps[noise] = rng.integers(0, 16, int(noise.sum()))
    pi = np.where(gi > 0, (gi * 3 + 1) % 11, 0).astype(np.int16)
    fp = rng.random(n) < 0.05
    pi[fp] = rng.integers(-2, 9, int(fp.sum()))
    return ps, pi, gs, gi


@pytest.mark.parametrize('preset', ['reference', 'strict'])
def test_streaming_split_and_merge_equals_one_pass(preset):
    settings = Settings.from_config(preset)
    rng = np.random.default_rng(2)
    frames = [random_frame(rng, 3000) for _ in range(40)]  # > compaction interval
    whole = core.SequenceAccumulator(3, settings)
    parts = [core.SequenceAccumulator(3, settings) for _ in range(3)]
    for i, fr in enumerate(frames):
        whole.add_frame(*fr, frame_idx=i)
        parts[i % 3].add_frame(*fr, frame_idx=i)
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]  # as gathered from other ranks
    merged = core.merge_partial_states([{3: p} for p in parts])[3]
    a, b = whole.close(), merged.close()
    assert a.num_frames == b.num_frames == 40
    np.testing.assert_array_equal(a.confusion, b.confusion)
    np.testing.assert_array_equal(a.num_tubes, b.num_tubes)
    np.testing.assert_allclose(a.aq_sum, b.aq_sum, rtol=1e-12)
    assert a.num_pred_tracks == b.num_pred_tracks and a.num_pairs == b.num_pairs
    assert a.num_tubes.sum() > 0


def test_merge_and_summarize_errors():
    s = Settings()
    a, b = core.SequenceAccumulator(1, s), core.SequenceAccumulator(1, s)
    fr = frame([(VEHICLE, 5, range(4))])
    a.add_frame(*fr, frame_idx=0)
    b.add_frame(*fr, frame_idx=0)
    with pytest.raises(ValueError, match='added twice'):
        core.merge_partial_states([{1: a}, {1: b}])
    with pytest.raises(ValueError, match='already added'):
        a.add_frame(*fr, frame_idx=0)
    with pytest.raises(ValueError, match='cannot merge sequence'):
        a.merge(core.SequenceAccumulator(2, s))
    with pytest.raises(ValueError, match='closed more than once'):
        core.summarize([a.close(), a.close()], s)


def test_bad_frames_raise_clear_errors():
    acc = core.SequenceAccumulator(0, Settings())
    ps, pi, gs, gi = frame()
    with pytest.raises(ValueError, match='my.npz: pred semantics has class ids outside'):
        acc.add_frame(np.full(N, 16, np.uint8), pi, gs, gi, source='my.npz')
    with pytest.raises(ValueError, match='my.npz: pred instances has 3 voxels'):
        acc.add_frame(ps, pi[:3], gs, gi, source='my.npz')
    with pytest.raises(ValueError, match='must be an integer array'):
        acc.add_frame(ps.astype(np.float32), pi, gs, gi, source='my.npz')
    assert acc.num_frames == 0
    # ids outside the evaluation mask are never looked at (as in the reference)
    mask = np.ones(N, bool)
    mask[:4] = False
    bad = ps.copy()
    bad[:4] = 200
    acc.add_frame(bad, pi, gs, gi, mask, source='my.npz')
    wide = core.SequenceAccumulator(0, Settings())
    wide.add_frame(bad.astype(np.int64), pi, gs.astype(np.int32), gi, mask)
    np.testing.assert_array_equal(acc.confusion, wide.confusion)  # fast and generic paths
    assert acc.confusion.sum() == N - 4
    # int64 ids that all fit (what the loader gives) take the uint8 path: the same counts
    narrow, loader = (core.SequenceAccumulator(0, Settings()) for _ in range(2))
    narrow.add_frame(ps, pi, gs, gi, mask)
    loader.add_frame(ps.astype(np.int64), pi, gs.astype(np.int64), gi, mask)
    np.testing.assert_array_equal(narrow.confusion, loader.confusion)
    closed = loader.close()
    for name, value in vars(narrow.close()).items():
        np.testing.assert_array_equal(value, getattr(closed, name), err_msg=name)


def test_settings_presets_and_errors():
    assert Settings.from_config(None) == Settings()
    strict = Settings.from_config(dict(preset='strict', min_points=3))
    assert strict.min_points == 3 and not strict.skip_instance_id_one
    assert Settings().include_classes == tuple(c for c in range(16) if c not in (9, 15))
    with pytest.raises(KeyError, match='unknown settings'):
        Settings.from_config(dict(min_pts=3))
    with pytest.raises(ValueError, match='empty_aq'):
        Settings(empty_aq='zero')
    with pytest.raises(ValueError, match='ignore_classes'):
        Settings(ignore_classes=(16,))


def test_table_lists_every_class():
    res = score([frame([(VEHICLE, 5, range(4))])])
    table = core.format_table(res)
    assert 'vehicle' in table and 'ignored' in table and 'OccSTQ' in table
    assert len(table.splitlines()) == 16 + 4


def test_sequence_csv_writes_plain_numbers_for_numpy_floats(tmp_path):
    """numpy >= 2 reprs np.float64 as ``np.float64(x)``; the CSV must hold plain numbers."""
    import csv

    import numpy as np

    from trackocc.evaluation.functional.occstq_summary import write_sequence_csv
    row = dict(sequence_id=7, num_frames=3, num_tubes=2, num_pred_tracks=1,
               OccSTQ=np.float64(0.25), AQ=np.float64(0.125), mIoU=float('nan'))
    path = tmp_path / 'seq.csv'
    write_sequence_csv(str(path), [row])
    (read, ) = list(csv.DictReader(path.open()))
    assert float(read['OccSTQ']) == 0.25 and float(read['AQ']) == 0.125
    assert read['mIoU'] == 'nan'
