"""Oracle association on hand-made frames whose answers are known."""
import numpy as np
import pytest

from trackocc.evaluation.functional import OccSTQSettings, SequenceAccumulator, summarize
from trackocc.evaluation.functional.oracle_association import OracleAssociation

from occ_toy_frames import toy_frame

N = 40
FREE, VEHICLE, ROAD = 15, 1, 13
A, B, FP = range(0, 4), range(10, 14), range(32, 35)


def frame(gt=(), pred=()):
    """Toy frame on road, so a prediction outside every object is a false positive."""
    return toy_frame(gt, pred, N, background=ROAD)


def sequence():
    """Tube A (vehicle 5): track 10 in frames 0-1, 11 in 2-3 (an ID switch); tube B (vehicle
    6): track 20 in frames 0, 2, 3, missed in 1; a false-positive vehicle 40 on road in
    frames 0-1."""
    frames = []
    for f in range(4):
        pred = [(A, VEHICLE, 10 if f < 2 else 11)]
        if f != 1:
            pred.append((B, VEHICLE, 20))
        if f <= 1:
            pred.append((FP, VEHICLE, 40))
        frames.append(frame([(A, VEHICLE, 5), (B, VEHICLE, 6)], pred))
    return frames


def score(frames, oracle=None):
    settings = OccSTQSettings.strict()
    acc = SequenceAccumulator(0, settings)
    for f, (ps, pi, gs, gi) in enumerate(frames):
        if oracle is not None:
            pi = oracle.relabel(pi, gi)
        acc.add_frame(ps, pi, gs, gi, frame_idx=f)
    return summarize([acc.close()], settings)


def test_oracle_ids_repair_switches_but_not_missing_masks():
    before, after = score(sequence()), score(sequence(), OracleAssociation())
    # A: 1/16 (8 * 8/16 + 8 * 8/16) = 0.5 -> 1; B: 12 voxels of 16 found, 12 * 0.75 / 16
    assert before['per_class_aq'][VEHICLE] == pytest.approx((0.5 + 0.5625) / 2)
    assert after['per_class_aq'][VEHICLE] == pytest.approx((1.0 + 0.5625) / 2)
    assert after['mIoU'] == before['mIoU']  # semantics untouched


def test_relabel_ids_per_frame():
    oracle = OracleAssociation()
    ps, pi, gs, gi = frame([(A, VEHICLE, 5), (B, VEHICLE, 6)],
                           [(list(A) + [10], VEHICLE, 7), (FP, VEHICLE, 9)])
    out = oracle.relabel(pi, gi)
    assert out.dtype == pi.dtype and out.shape == pi.shape
    # 7 covers 4 voxels of gt 5 and one of gt 6: it takes 5's oracle id; 9 touches no gt
    assert len(set(out[list(A) + [10]].tolist())) == 1 and out[0] >= 2
    assert out[32] not in (0, out[0]) and (out[[20, 21, 39]] == 0).all()
    # the next frame: another prediction over gt 5 gets the same id; the unmatched one a new id
    _, pi2, _, gi2 = frame([(A, VEHICLE, 5)], [(A, VEHICLE, 3), (FP, VEHICLE, 9)])
    out2 = oracle.relabel(pi2, gi2)
    assert out2[0] == out[0] and out2[32] not in (out[32], out[0], 0)


def test_relabel_ties_mask_and_errors():
    gi = np.zeros(N, np.int16)
    gi[[0, 1]], gi[[2, 3]] = 8, 6
    pi = np.zeros(N, np.int16)
    pi[:4] = 4
    oracle = OracleAssociation()
    tie = oracle.relabel(pi, gi)  # two voxels each: the smaller gt id, 6
    again = oracle.relabel(np.where(gi == 6, 1, 0).astype(np.int16), gi)
    assert tie[0] == again[2]
    mask = np.ones(N, bool)
    mask[[2, 3]] = False  # gt 6's voxels not evaluated: the prediction takes 8
    masked = OracleAssociation().relabel(pi, gi, mask)
    first8 = OracleAssociation().relabel(np.where(gi == 8, 1, 0).astype(np.int16), gi)
    assert masked[0] == first8[0]
    with pytest.raises(ValueError, match='voxels'):
        OracleAssociation().relabel(pi, gi[:10])
    small = OracleAssociation(max_id=2)
    small.relabel(np.where(np.arange(N) == 30, 1, 0).astype(np.int16), gi)  # id 2
    with pytest.raises(ValueError, match='ids in one sequence'):
        small.relabel(np.where(np.arange(N) == 31, 1, 0).astype(np.int16), gi)


def test_per_voxel_splits_a_mask_over_two_objects():
    """One prediction over tubes A and B: the instance oracle keeps it one track; the
    per-voxel oracle splits it into both, and the vehicle AQ becomes perfect."""
    frames = [frame([(A, VEHICLE, 5), (B, VEHICLE, 6)], [(list(A) + list(B), VEHICLE, 3)])
              for _ in range(2)]
    merged = score(frames, OracleAssociation())
    split = score(frames, OracleAssociation(per_voxel=True))
    # each tube: its 8 voxels in the one track of 16, IoU 8/16 -> AQ 0.5
    assert merged['per_class_aq'][VEHICLE] == pytest.approx(0.5)
    assert split['per_class_aq'][VEHICLE] == pytest.approx(1.0)
    _, pi, _, gi = frames[0]
    out = OracleAssociation(per_voxel=True).relabel(pi, gi)
    assert len(set(out[list(A)].tolist())) == 1 and out[0] != out[10]
    # predicted voxels outside every gt instance keep one id of their own
    pi2 = pi.copy()
    pi2[[30, 31]] = 3
    out2 = OracleAssociation(per_voxel=True).relabel(pi2, gi)
    assert out2[30] == out2[31] and out2[30] not in (0, out2[0], out2[10])
