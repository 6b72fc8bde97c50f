"""trackocc.analysis.held_out_scoring: where a fast mode's held-out predictions differ from the
reference mode's, frame by frame and sequence by sequence (exact counts on hand-made frames)."""
import pytest
import torch

from trackocc.analysis.held_out_scoring import prediction_agreement, sequence_spans


def _frame(sem, inst):
    return torch.tensor(sem, dtype=torch.uint8), torch.tensor(inst, dtype=torch.long)


def test_spans_follow_runs_of_equal_ids():
    assert sequence_spans(['a', 'a', 'b', 'b', 'b', 'a']) == [('a', 0, 2), ('b', 2, 5),
                                                             ('a', 5, 6)]
    assert sequence_spans([]) == []


def test_class_and_instance_differences_are_counted_apart():
    ref = [_frame([1, 2, 3, 3], [0, 1, 2, 2]), _frame([1, 2, 3, 3], [0, 1, 2, 2]),
           _frame([0, 0, 1, 1], [0, 0, 5, 5])]
    # frame 0 equal; frame 1: one voxel of another class (its id differs too: counted once
    # as a class difference) and one of the same class under another id; frame 2: one id
    fast = [_frame([1, 2, 3, 3], [0, 1, 2, 2]), _frame([1, 4, 3, 3], [0, 3, 2, 7]),
            _frame([0, 0, 1, 1], [0, 0, 5, 6])]
    out = prediction_agreement(ref, fast, [7, 7, 9])
    assert out['semantic_diff_voxels'] == [0, 1, 0]
    assert out['instance_diff_voxels'] == [0, 1, 1]
    assert out['first_differing_frame'] == 1
    assert out['sequences'] == [
        dict(sequence=7, frames=2, differing_frames=1, mean_semantic_diff_voxels=0.5,
             mean_instance_diff_voxels=0.5),
        dict(sequence=9, frames=1, differing_frames=1, mean_semantic_diff_voxels=0.0,
             mean_instance_diff_voxels=1.0)]
    same = prediction_agreement(ref, ref, [7, 7, 9])
    assert same['first_differing_frame'] is None
    assert all(s['differing_frames'] == 0 for s in same['sequences'])


def test_lengths_must_match():
    frames = [_frame([1], [0])]
    with pytest.raises(ValueError, match='2 predictions, 1 reference frames and 1 sequence'):
        prediction_agreement(frames, frames * 2, [0])
