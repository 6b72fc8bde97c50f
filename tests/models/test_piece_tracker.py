"""PieceTracker: merged instances cut into connected pieces, pieces tracked by world-frame
centroid; and the detector's ``piece_tracker`` option."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from test_detector import build, images, make_clip, make_frame, tiny_cfg

from trackocc.models.trackers import PieceTracker

SIZE = (12, 10, 3)
RANGE = (0.0, 0.0, 0.0, 12.0, 10.0, 3.0)  # 1 m voxels, voxel (i, j, k) centred at +0.5
FIRST = 100


def pose(x=0.0):
    """ego2global (4, 4): the ego at (x, 0, 0), axes along the world's."""
    out = np.eye(4)
    out[0, 3] = x
    return out


def grid(*blocks):
    """(N,) int32 ids from (id, x0, x1, y0, y1) blocks at z = 1."""
    out = torch.zeros(SIZE, dtype=torch.int32)
    for ident, x0, x1, y0, y1 in blocks:
        out[x0:x1, y0:y1, 1] = ident
    return out.view(-1)


def tracker(**kwargs):
    return PieceTracker(SIZE, RANGE, first_piece_id=FIRST, **kwargs)


def ids_at(out, *xy):
    return [int(out.view(SIZE)[x, y, 1]) for x, y in xy]


def test_an_instance_over_two_objects_becomes_two_instances_and_crumbs_lose_the_id():
    # id 3 over a 3x3 block, a 2x2 block (not touching) and a single voxel (< min_voxels)
    inst = grid((3, 0, 3, 0, 3), (3, 6, 8, 0, 2), (3, 10, 11, 8, 9))
    out = tracker(min_voxels=4)(inst, pose())
    assert out.dtype == inst.dtype and out.shape == inst.shape
    assert ids_at(out, (1, 1), (6, 0), (10, 8)) == [3, FIRST, 0]  # largest keeps the id
    # every voxel kept is a voxel of the input instance
    assert torch.all((out == 0) | (inst > 0))


def test_a_lone_small_instance_keeps_its_id():
    out = tracker(min_voxels=8)(grid((5, 0, 1, 0, 2)), pose())
    assert ids_at(out, (0, 0), (0, 1)) == [5, 5]


def test_connectivity_decides_diagonal_neighbours():
    inst = grid((4, 0, 2, 0, 2), (4, 2, 4, 2, 4))  # two 2x2 blocks meeting at one corner edge
    assert ids_at(tracker(connectivity=26, min_voxels=1)(inst, pose()), (3, 3)) == [4]
    assert ids_at(tracker(connectivity=6, min_voxels=1)(inst, pose()), (3, 3)) == [FIRST]


def test_pieces_keep_their_ids_across_frames_and_ego_motion():
    pieces = tracker(min_voxels=2)
    first = pieces(grid((3, 0, 3, 0, 3), (3, 7, 9, 0, 2)), pose(0.0))
    assert ids_at(first, (1, 1), (7, 0)) == [3, FIRST]
    # the ego moves +2 m: the same world objects sit 2 voxels lower in x; the small piece
    # is now the larger one (it grew), which must not take the track's id from the other
    second = pieces(grid((3, 0, 1, 0, 3), (3, 5, 9, 0, 2)), pose(2.0))
    assert ids_at(second, (0, 1), (6, 0)) == [3, FIRST]
    # a new sequence forgets them: the largest piece takes the track id again
    third = pieces(grid((3, 0, 1, 0, 3), (3, 5, 9, 0, 2)), pose(2.0), new_sequence=True)
    assert ids_at(third, (0, 1), (6, 0)) == [FIRST, 3]


def test_a_piece_too_far_away_is_not_matched():
    pieces = tracker(min_voxels=2, max_distance=2.0)
    pieces(grid((3, 0, 3, 0, 3), (3, 7, 9, 0, 2)), pose())
    out = pieces(grid((3, 0, 3, 0, 3), (3, 7, 9, 6, 8)), pose())  # the small piece jumped 6 m
    assert ids_at(out, (1, 1), (7, 6)) == [3, FIRST + 1]


def test_match_across_tracks_follows_a_piece_to_another_track():
    before = grid((3, 0, 3, 0, 3), (4, 7, 9, 0, 2))
    after = grid((3, 0, 3, 0, 3), (9, 7, 9, 0, 2))  # the same object now under track 9
    within, across = tracker(min_voxels=2), tracker(min_voxels=2, match_across_tracks=True)
    for pieces in (within, across):
        pieces(before, pose())
    assert ids_at(within(after, pose()), (7, 0)) == [9]
    assert ids_at(across(after, pose()), (7, 0)) == [4]


def test_class_cut_joins_touching_instances_of_a_class_under_the_majority_id():
    inst = grid((3, 0, 3, 0, 2), (4, 3, 4, 0, 2), (5, 4, 6, 0, 2))  # three touching blocks
    sem = torch.zeros(SIZE, dtype=torch.uint8)
    sem.view(SIZE)[4:6, 0:2, 1] = 2  # the last block is of another class
    out = tracker(cut='class', min_voxels=1)(inst, pose(), sem.view(-1))
    assert ids_at(out, (0, 0), (3, 0), (4, 0)) == [3, 3, 5]
    with pytest.raises(ValueError, match='semantics'):
        tracker(cut='class')(inst, pose())


def test_pieces_equal_scipy_components_on_a_random_grid():
    """Every kept piece is exactly one 26-connected component of its instance."""
    gen = np.random.default_rng(0)
    raw = gen.integers(1, 4, size=SIZE) * (gen.random(SIZE) < 0.3)
    out = tracker(min_voxels=1)(torch.from_numpy(raw.astype(np.int32)).view(-1), pose())
    out = out.view(SIZE).numpy()
    cube = ndimage.generate_binary_structure(3, 3)
    expected = sum(ndimage.label(raw == i, structure=cube)[1] for i in (1, 2, 3))
    assert len(np.unique(out[out > 0])) == expected
    for ident in np.unique(out[out > 0]):
        parents = np.unique(raw[out == ident])
        assert len(parents) == 1
        labels, count = ndimage.label(raw == parents[0], structure=cube)
        assert len(np.unique(labels[out == ident])) == 1  # one component ...
        assert (labels == labels[out == ident][0]).sum() == (out == ident).sum()  # ... whole


def test_bad_arguments_and_ids():
    with pytest.raises(ValueError, match='connectivity'):
        tracker(connectivity=8)
    with pytest.raises(ValueError, match='cut'):
        tracker(cut='semantic')
    with pytest.raises(ValueError, match='min_voxels'):
        tracker(min_voxels=0)
    with pytest.raises(ValueError, match='first_piece_id'):
        PieceTracker(SIZE, RANGE, first_piece_id=40000)
    with pytest.raises(ValueError, match='raise first_piece_id'):
        tracker()(grid((FIRST, 0, 2, 0, 2)), pose())
    crowded = PieceTracker(SIZE, RANGE, min_voxels=1, first_piece_id=32767)
    with pytest.raises(ValueError, match='fresh piece ids'):
        crowded(grid((1, 0, 1, 0, 1), (1, 2, 3, 0, 1), (1, 4, 5, 0, 1)), pose())


def test_detector_applies_the_piece_tracker_after_the_merge():
    """``TrackOcc(piece_tracker=...)``: the frame's instances are the merge's, cut into
    pieces, with ids that persist across frames; off by default."""
    n = 20 * 20 * 4
    merged = torch.zeros(20, 20, 4, dtype=torch.int32)
    merged[0:4, 0:4, 1] = 1   # track 0 over two objects far apart
    merged[12:14, 12:14, 1] = 1

    def merge(tracks, out):
        return torch.full((n, ), 1, dtype=torch.int32), merged.view(-1).clone()

    results = {}
    for name, option in (('off', None), ('on', dict(type='PieceTracker', min_voxels=2))):
        cfg = tiny_cfg()
        cfg['piece_tracker'] = option
        model = build(cfg).eval()
        model._merge = merge
        results[name] = []
        for t in range(2):
            with torch.no_grad():
                out = model.predict(dict(imgs=images(1, 1, seed=t)),
                                    [make_clip([make_frame(t, start=(t == 0), ego_x=0.0)])])
            inst = out[0].video_data_samples[0].pred_occ.instances
            results[name].append((int(inst[1, 1, 1]), int(inst[12, 12, 1])))
    assert results['off'] == [(1, 1), (1, 1)]
    assert results['on'] == [(1, 16384), (1, 16384)]
