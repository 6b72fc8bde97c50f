"""Track instances, runtime tracker id lifecycle, query interaction, memory bank and
reference-point ego-motion alignment."""
import math

import pytest
import torch

from host_reads import no_device_waits
from trackocc.models.trackers import (TRACK_FIELDS, MemoryBank, QueryInteractionModule,
                                      RuntimeTracker, align_ref_points, build_empty_tracks,
                                      cat_tracks, inverse_sigmoid, relative_ego_transform)

E = 16


def make_tracks(num, obj_idxes=None, scores=None, memory_len=4):
    torch.manual_seed(0)
    tracks = build_empty_tracks(torch.randn(num, 2 * E), torch.randn(num, 3), 16,
                                memory_len=memory_len)
    if obj_idxes is not None:
        tracks.obj_idxes = torch.tensor(obj_idxes, dtype=torch.long)
    if scores is not None:
        tracks.scores = torch.tensor(scores, dtype=torch.float)
    tracks.output_embedding = torch.randn(num, E)
    return tracks


def test_track_instances_index_and_cat():
    tracks = make_tracks(5, obj_idxes=[-1, 3, -1, 0, 7])
    active = tracks[tracks.obj_idxes >= 0]
    assert len(active) == 3 and active.obj_idxes.tolist() == [3, 0, 7]
    assert active.mem_bank.shape == (3, 4, E)
    merged = cat_tracks(make_tracks(2), active)
    assert len(merged) == 5 and merged.obj_idxes.tolist() == [-1, -1, 3, 0, 7]
    assert set(merged.keys()) == set(TRACK_FIELDS)
    with pytest.raises(ValueError, match='query must be'):
        build_empty_tracks(torch.zeros(3, 5), torch.zeros(3, 3), 16)


def step(tracker, tracks, scores):
    tracks.scores = torch.tensor(scores, dtype=torch.float)
    tracker.update(tracks)
    return tracks.obj_idxes.tolist()


def test_runtime_tracker_lifecycle():
    tracker = RuntimeTracker(score_thresh=0.3, filter_score_thresh=0.25, miss_tolerance=3)
    tracks = make_tracks(4)
    # birth: confident queries get ids in query order
    assert step(tracker, tracks, [0.9, 0.1, 0.5, 0.29]) == [0, -1, 1, -1]
    # keep: between the thresholds neither a miss nor a reset; a later birth gets id 2
    assert step(tracker, tracks, [0.27, 0.1, 0.8, 0.31]) == [0, -1, 1, 2]
    assert tracks.disappear_time.tolist() == [0, 0, 0, 0]
    # miss: below the filter threshold; two misses do not kill
    assert step(tracker, tracks, [0.1, 0.0, 0.9, 0.2]) == [0, -1, 1, 2]
    assert step(tracker, tracks, [0.1, 0.0, 0.9, 0.9]) == [0, -1, 1, 2]
    assert tracks.disappear_time.tolist() == [2, 0, 0, 0]
    # death at the third miss since the last confident frame
    assert step(tracker, tracks, [0.2, 0.0, 0.9, 0.9]) == [-1, -1, 1, 2]
    # a miss counter restarts after a confident frame
    assert step(tracker, tracks, [0.0, 0.0, 0.1, 0.9]) == [-1, -1, 1, 2]
    assert step(tracker, tracks, [0.0, 0.0, 0.9, 0.9]) == [-1, -1, 1, 2]
    assert tracks.disappear_time.tolist()[2] == 0
    # a dead query can be reborn with a new id
    assert step(tracker, tracks, [0.5, 0.0, 0.9, 0.9]) == [3, -1, 1, 2]
    # reset at the start of a sequence: ids count from 0 again
    tracker.reset()
    fresh = make_tracks(3)
    assert step(tracker, fresh, [0.1, 0.6, 0.7]) == [-1, 0, 1]


def test_runtime_tracker_counts_misses_since_the_last_confident_frame():
    """A score in [filter_score_thresh, score_thresh) neither counts nor resets: misses
    need not be consecutive (the original's rule)."""
    tracker = RuntimeTracker(score_thresh=0.3, filter_score_thresh=0.25, miss_tolerance=3)
    tracks = make_tracks(1)
    assert step(tracker, tracks, [0.9]) == [0]
    for score in (0.1, 0.27, 0.1, 0.29):
        assert step(tracker, tracks, [score]) == [0]
    assert tracks.disappear_time.tolist() == [2]
    assert step(tracker, tracks, [0.1]) == [-1]


def test_runtime_tracker_drops_births_the_merge_hides():
    tracker = RuntimeTracker(birth_needs_output=True)
    tracker.max_obj_id = 1
    tracks = make_tracks(4, obj_idxes=[0, -1, 5, -1], scores=[0.9, 0.9, 0.9, 0.9])
    unborn = tracks.obj_idxes < 0
    tracker.update(tracks)  # queries 1 and 3 are born as ids 1 and 2
    assert tracks.obj_idxes.tolist() == [0, 1, 5, 2]
    # the merged voxels show id 2 (query 3) and no track of id 0 or 5 (already carried)
    tracker.drop_hidden_births(tracks, unborn, torch.tensor([0, 3, 3, 0], dtype=torch.int32))
    assert tracks.obj_idxes.tolist() == [0, -1, 5, 2]
    # ids are not reused: the dropped query is born again with the next free id
    assert step(tracker, tracks, [0.9, 0.9, 0.9, 0.9]) == [0, 3, 5, 2]


def test_runtime_tracker_output_mask_and_registry():
    from trackocc.registry import MODELS
    tracker = MODELS.build(dict(type='RuntimeTracker', score_thresh=0.4,
                                filter_score_thresh=0.2, miss_tolerance=2))
    assert isinstance(tracker, RuntimeTracker) and tracker.miss_tolerance == 2
    tracks = make_tracks(4, obj_idxes=[-1, 0, 1, 2], scores=[0.9, 0.2, 0.19, 0.5])
    assert tracker.output_mask(tracks).tolist() == [False, True, False, True]


def test_runtime_tracker_rejects_bad_thresholds():
    with pytest.raises(ValueError, match='filter_score_thresh'):
        RuntimeTracker(score_thresh=0.2, filter_score_thresh=0.3)


def yaw_pose(yaw_deg, tx, ty, tz=0.0):
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    return torch.tensor([[c, -s, 0, tx], [s, c, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]],
                        dtype=torch.float64)


def test_relative_ego_transform_maps_points():
    src, dst = yaw_pose(30, 2, 3), yaw_pose(-10, 5, -1)
    src2dst = relative_ego_transform(src, dst)
    p = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(dst @ (src2dst @ p), src @ p)


def test_align_ref_points_hand_computed():
    pc_range = [-40, -40, -1.0, 40, 40, 5.4]
    # metric point (10, 0, 1) moving at 2 m/s along x for 0.5 s -> (11, 0, 1) in the src frame;
    # the ego moves 5 m forward and turns left by 90 degrees, so the point is 6 m ahead of
    # the old position, i.e. at (0, -6, 1) in the new ego frame.
    norm = torch.tensor([[(10 + 40) / 80, (0 + 40) / 80, (1 + 1) / 6.4]])
    ref = inverse_sigmoid(norm)
    src2dst = relative_ego_transform(torch.eye(4, dtype=torch.float64), yaw_pose(90, 5, 0))
    out = align_ref_points(ref, src2dst, pc_range, velocity=torch.tensor([[2.0, 0.0, 0.0]]),
                           time_interval=0.5)
    expect = torch.tensor([[(0 + 40) / 80, (-6 + 40) / 80, (1 + 1) / 6.4]])
    assert torch.allclose(out.sigmoid(), expect, atol=1e-5)
    # without velocity and ego motion the point is unchanged
    same = align_ref_points(ref, torch.eye(4), pc_range)
    assert torch.allclose(same.sigmoid(), norm, atol=1e-6)


def test_align_ref_points_gradient():
    ref = torch.zeros(3, 3, requires_grad=True)
    velo = torch.ones(3, 3, requires_grad=True)
    align_ref_points(ref, yaw_pose(10, 1, 2), [-40, -40, -1, 40, 40, 5.4], velo).sum().backward()
    assert ref.grad.abs().sum() > 0 and velo.grad.abs().sum() > 0


def test_qim_eval_selects_active_and_updates_queries():
    qim = QueryInteractionModule(embed_dims=E, num_heads=2, random_drop=0.1, fp_ratio=0.3).eval()
    tracks = make_tracks(5, obj_idxes=[-1, 4, -1, 0, 2], scores=[0.9, 0.5, 0.8, 0.4, 0.1])
    tracks.output_embedding.requires_grad_(True)
    init = make_tracks(3)
    out = qim(tracks, init)
    assert len(out) == 6
    assert out.obj_idxes.tolist() == [-1, -1, -1, 4, 0, 2]
    assert not torch.allclose(out.query[3:], tracks.query[[1, 3, 4]])
    out.query[3:].sum().backward()
    assert tracks.output_embedding.grad.abs().sum() > 0


def test_qim_training_drop_and_false_positives():
    torch.manual_seed(1)
    qim = QueryInteractionModule(embed_dims=E, num_heads=2, random_drop=0.0, fp_ratio=1.0).train()
    tracks = make_tracks(6, obj_idxes=[-1, 5, -1, -1, 6, -1], scores=[0.1, 0.9, 0.7, 0.2, 0.9, 0.6])
    active = qim.select_active_tracks(tracks)
    # two active tracks + the two highest-scoring inactive queries as false positives
    assert active.obj_idxes.tolist() == [5, 6, -1, -1]
    assert sorted(active.scores[2:].tolist()) == pytest.approx([0.6, 0.7])
    # random drop never empties the active set
    qim_drop = QueryInteractionModule(embed_dims=E, num_heads=2, random_drop=0.5,
                                      fp_ratio=0.0).train()
    kept = [len(qim_drop.select_active_tracks(tracks)) for _ in range(20)]
    assert min(kept) >= 1 and max(kept) <= 2 and min(kept) < 2


def test_qim_training_with_the_rows_known_selects_as_it_finds_them():
    """Training with the active and inactive rows given (as the matching knows them) selects,
    drops and adds false positives exactly as with the rows found on the device."""
    qim = QueryInteractionModule(embed_dims=E, num_heads=2, random_drop=0.3, fp_ratio=0.5).train()
    tracks = make_tracks(7, obj_idxes=[-1, 5, -1, 8, 6, -1, 2],
                         scores=[0.1, 0.9, 0.7, 0.3, 0.9, 0.6, 0.4])
    for seed in range(5):
        torch.manual_seed(seed)
        found = qim.select_active_tracks(tracks)
        torch.manual_seed(seed)
        given = qim.select_active_tracks(tracks, torch.tensor([1, 3, 4, 6]),
                                         torch.tensor([0, 2, 5]))
        assert len(given) == len(found)
        for key in ('obj_idxes', 'scores', 'query'):
            assert torch.equal(given.get(key), found.get(key)), (seed, key)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_qim_training_with_the_rows_known_does_not_wait_for_the_gpu():
    qim = QueryInteractionModule(embed_dims=E, num_heads=2, random_drop=0.3,
                                 fp_ratio=0.5).train().cuda()
    tracks = make_tracks(7, obj_idxes=[-1, 5, -1, 8, 6, -1, 2],
                         scores=[0.1, 0.9, 0.7, 0.3, 0.9, 0.6, 0.4]).to('cuda')
    rows = torch.tensor([1, 3, 4, 6], device='cuda'), torch.tensor([0, 2, 5], device='cuda')
    qim(tracks, tracks[:0], rows[0], inactive_index=rows[1])  # pinned blocks, kernels
    with no_device_waits():
        out = qim(tracks, tracks[:0], rows[0], inactive_index=rows[1])
    assert 1 <= len(out) <= 7


def test_memory_bank_save_and_attend():
    bank = MemoryBank(embed_dims=E, memory_len=3, num_heads=2, save_period=2).eval()
    tracks = make_tracks(3, scores=[0.9, 0.0, 0.5], memory_len=3)
    before = tracks.output_embedding.clone()
    out = bank(tracks)
    # nothing in memory yet: embeddings unchanged; saving needs score > 0
    assert torch.allclose(out.output_embedding, before)
    assert out.mem_padding_mask.tolist() == [[True, True, False], [True, True, True],
                                             [True, True, False]]
    assert out.save_period.tolist() == [2, 0, 2]
    out2 = bank(out)
    # tracks with memory attend to it; the save period blocks the next save
    assert not torch.allclose(out2.output_embedding[0], before[0])
    assert torch.allclose(out2.output_embedding[1], before[1])
    assert out2.mem_padding_mask[0].tolist() == [True, True, False]
    assert out2.save_period.tolist() == [1, 0, 1]
    bank.train()
    out3 = bank(out2)
    assert out3.mem_padding_mask[0].tolist() == [True, False, False]


def test_stream_state_builds_next_queries_once():
    from trackocc.models.trackers import StreamState, build_empty_tracks
    tracks = build_empty_tracks(torch.randn(5, 8), torch.zeros(5, 3), num_classes=3)
    tracks.obj_idxes = torch.tensor([-1, 4, -1, 7, 9])
    calls = []

    def finish(state):
        calls.append(state.num_active())
        return state['pending'][torch.tensor([1, 3, 4])]

    state = StreamState(finish, ego2global=None, sequence_id='s')
    state.set_pending(tracks)
    assert 'tracks' not in state and state.num_active() == 3 and not calls
    with pytest.raises(KeyError):  # a dict read runs nothing
        state['tracks']
    assert not calls
    first = state.next_queries()
    assert state.next_queries() is first and calls == [3]  # built once
    assert first.obj_idxes.tolist() == [4, 7, 9] and 'pending' not in state
    assert state['tracks'] is first
    with pytest.raises(KeyError):
        state['other']
    with pytest.raises(KeyError, match='set_pending'):
        StreamState(finish, ego2global=None, sequence_id='s').next_queries()
