"""Track diagnostics on small hand-made sequences whose answers are known."""
import pytest

from trackocc.evaluation.functional import OccSTQSettings, summarize
from trackocc.evaluation.functional.track_diagnostics import TrackDiagnostics

from occ_toy_frames import toy_frame

N = 40  # voxels of the flat toy grid
FREE, VEHICLE, PEDESTRIAN, CYCLIST, ROAD = 15, 1, 2, 4, 13


def frame(gt=(), pred=()):
    """(pred_sem, pred_inst, gt_sem, gt_inst) from [(voxels, class, id)] lists."""
    return toy_frame(gt, pred, N, background=FREE)


A, B, C, D, FP = range(0, 4), range(10, 14), range(20, 23), range(25, 28), range(32, 35)


def hand_case():
    """Four frames:
    tube A (vehicle 5): track 10 in frames 0-1, track 11 in frames 2-3 -> one ID switch;
    tube B (vehicle 6): track 20 in frames 0, 2, 3, nothing in 1 -> one fragmentation;
    tube C (pedestrian 7): never predicted -> missed;
    tube D (cyclist 8, frames 1-3): track 30, perfect;
    track 40 (pedestrian, frames 0-1) on gt road -> false positive (on gt free space it
    would not count: OccSTQ drops voxels of ignored gt classes)."""
    frames = []
    for f in range(4):
        gt = [(A, VEHICLE, 5), (B, VEHICLE, 6), (C, PEDESTRIAN, 7), (FP, ROAD, 0)]
        pred = [(A, VEHICLE, 10 if f < 2 else 11)]
        if f != 1:
            pred.append((B, VEHICLE, 20))
        if f >= 1:
            gt.append((D, CYCLIST, 8))
            pred.append((D, CYCLIST, 30))
        if f <= 1:
            pred.append((FP, PEDESTRIAN, 40))
        frames.append(frame(gt, pred))
    return frames


@pytest.mark.parametrize('settings', [OccSTQSettings.strict(), OccSTQSettings(min_points=0)],
                         ids=['strict', 'reference'])
def test_hand_case(settings):
    diag = TrackDiagnostics(3, settings)
    for f, arrays in enumerate(hand_case()):
        diag.add_frame(*arrays, frame_idx=f)
    rep = diag.close()
    tubes = {t['id']: t for t in rep['tubes']}
    tracks = {t['id']: t for t in rep['tracks']}
    assert sorted(tubes) == [5, 6, 7, 8] and sorted(tracks) == [10, 11, 20, 30, 40]

    a, b, c, d = tubes[5], tubes[6], tubes[7], tubes[8]
    assert (a['id_switches'], a['fragmentations'], a['matched_frames']) == (1, 0, 4)
    assert a['matched_tracks'] == [10, 11] and a['majority_track'] == 10
    assert a['coverage'] == 0.5 and a['aq'] == pytest.approx(0.5)  # 1/16 (8*8/16 + 8*8/16)
    assert (b['id_switches'], b['fragmentations'], b['matched_frames']) == (0, 1, 3)
    assert b['coverage'] == 0.75 and b['aq'] == pytest.approx(12 * 0.75 / 16)
    assert (c['matched_frames'], c['coverage'], c['aq'], c['majority_track']) == (0, 0.0, 0.0,
                                                                                 None)
    assert (d['first_frame'], d['lifetime'], d['coverage'], d['aq']) == (1, 3, 1.0, 1.0)
    assert tracks[40]['false_positive'] and tracks[40]['class_id'] == PEDESTRIAN
    assert not any(tracks[k]['false_positive'] for k in (10, 11, 20, 30))
    assert tracks[20]['lifetime'] == 4 and tracks[20]['frames'] == 3
    # one object each: pure; the false positive lies on gt road (stuff): purity 0, no tube
    assert all(tracks[k]['purity'] == 1.0 and tracks[k]['tubes_per_frame'] == 1.0
               for k in (10, 11, 20, 30))
    assert tracks[40]['purity'] == 0.0 and tracks[40]['tubes_per_frame'] == 0.0

    pf = rep['per_frame']
    assert pf['births'] == [3, 1, 1, 0]  # 10, 20, 40 | 30 | 11
    assert pf['deaths'] == [0, 2, 0, 0]  # 10 and 40 end at frame 1; the rest live to the end
    assert pf['gt_births'] == [3, 1, 0, 0] and pf['gt_deaths'] == [0, 0, 0, 0]
    assert pf['gt_instances'] == [3, 4, 4, 4] and pf['pred_instances'] == [3, 3, 3, 3]
    assert pf['matched'] == [2, 2, 3, 3]

    veh, ped, cyc = (rep['per_class'][k] for k in ('vehicle', 'pedestrian', 'cyclist'))
    assert (veh['gt_tubes'], veh['pred_tracks'], veh['id_switches'], veh['fragmentations'],
            veh['missed_tubes'], veh['mostly_tracked'], veh['mostly_lost'],
            veh['false_positive_tracks']) == (2, 3, 1, 1, 0, 1, 0, 0)
    assert veh['track_births_per_frame'] == pytest.approx(1 / 3)  # track 11, 3 transitions
    assert veh['track_lifetime_median'] == 2.0
    assert veh['track_lifetime_mean'] == pytest.approx(8 / 3)
    assert (ped['missed_tubes'], ped['mostly_lost'], ped['false_positive_tracks']) == (1, 1, 1)
    assert (cyc['mostly_tracked'], cyc['coverage_mean'], cyc['aq']) == (1, 1.0, 1.0)
    overall = rep['overall']
    assert (overall['id_switches'], overall['fragmentations'], overall['missed_tubes'],
            overall['false_positive_tracks']) == (1, 1, 1, 1)
    assert overall['instance_recall'] == pytest.approx(10 / 15)

    # the AQ column is OccSTQ's per-class AQ of the same frames
    occ = summarize([diag.occstq_stats], settings)
    assert occ['per_class_aq'][VEHICLE] == pytest.approx(veh['aq'])
    assert occ['per_class_aq'][PEDESTRIAN] == pytest.approx(ped['aq'])
    assert occ['per_class_aq'][CYCLIST] == pytest.approx(cyc['aq'])


def test_perfect_track_and_no_match_below_half():
    diag = TrackDiagnostics(0, OccSTQSettings.strict())
    for f in range(3):
        # the prediction covers A and half of B with one id: IoU 4/6 with A, 0 with B
        diag.add_frame(*frame([(A, VEHICLE, 5), (range(4, 6), VEHICLE, 6)],
                              [(range(0, 6), VEHICLE, 9)]), frame_idx=f)
    rep = diag.close()
    tubes = {t['id']: t for t in rep['tubes']}
    assert tubes[5]['matched_frames'] == 3 and tubes[5]['id_switches'] == 0
    assert tubes[6]['matched_frames'] == 0 and tubes[6]['majority_track'] == 9
    assert tubes[6]['coverage'] == 1.0  # covered, but never the track's match
    assert rep['per_class']['vehicle']['false_positive_tracks'] == 0
    # the track spans both objects: 4 of its 6 voxels in its best gt instance, 2 touched
    track = rep['tracks'][0]
    assert track['purity'] == pytest.approx(4 / 6) and track['tubes_per_frame'] == 2.0
    veh = rep['per_class']['vehicle']
    assert veh['purity_mean'] == pytest.approx(4 / 6)
    assert veh['tubes_per_track_frame'] == 2.0

    diag = TrackDiagnostics(0, OccSTQSettings.strict(), iou_thr=0.2)
    for f in range(2):  # a pred of IoU 1/3 with the tube matches at a lower threshold
        diag.add_frame(*frame([(range(0, 6), VEHICLE, 5)], [(range(0, 2), VEHICLE, 9)]),
                       frame_idx=f)
    assert diag.close()['tubes'][0]['matched_frames'] == 2


def test_pooled_track_class_is_the_majority():
    diag = TrackDiagnostics(0, OccSTQSettings(min_points=0))
    pred = [(range(0, 3), PEDESTRIAN, 9), (range(3, 4), VEHICLE, 9)]
    diag.add_frame(*frame([(A, VEHICLE, 5)], pred), frame_idx=0)
    rep = diag.close()
    assert rep['tracks'][0]['class_id'] == PEDESTRIAN
    # the reference intersects regardless of the predicted class: matched (IoU 1)
    assert rep['tubes'][0]['matched_frames'] == 1


def test_bad_input():
    diag = TrackDiagnostics(0)
    diag.add_frame(*frame(), frame_idx=2)
    with pytest.raises(ValueError, match='time order'):
        diag.add_frame(*frame(), frame_idx=1)
    sem, inst, gsem, ginst = frame()
    with pytest.raises(ValueError, match='pred instances has 39 voxels'):
        TrackDiagnostics(0).add_frame(sem, inst[:-1], gsem, ginst, source='x.npz')
    with pytest.raises(ValueError, match='no frame'):
        TrackDiagnostics(4).close()
    with pytest.raises(ValueError, match='iou_thr'):
        TrackDiagnostics(0, iou_thr=1.5)
