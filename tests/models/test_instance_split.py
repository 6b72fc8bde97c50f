"""keep_largest_occupied_piece: each instance keeps its largest occupied piece."""
import pytest
import torch

from trackocc.models.heads.instance_split import keep_largest_occupied_piece


def test_instance_keeps_its_largest_occupied_piece():
    inst = torch.zeros(6, 4, 2, dtype=torch.int32)
    occ = torch.zeros(6, 4, 2, dtype=torch.bool)
    inst[0:6, 0, 0] = 7        # one instance along x ...
    occ[0:3, 0, 0] = True      # ... over two occupied pieces (3 and 2 voxels)
    occ[4:6, 0, 0] = True      # with a free voxel (x = 3) between them
    inst[0:2, 2, 1] = 9        # another instance, one piece: untouched
    occ[0:2, 2, 1] = True
    out = keep_largest_occupied_piece(inst, occ)
    assert out.dtype == inst.dtype and out.shape == inst.shape
    assert out[0:3, 0, 0].tolist() == [7, 7, 7]
    assert out[3, 0, 0] == 7            # its free voxel stays (no object there)
    assert out[4:6, 0, 0].tolist() == [0, 0]  # the smaller occupied piece loses the id
    assert out[0:2, 2, 1].tolist() == [9, 9]
    assert torch.equal(inst[4:6, 0, 0], torch.tensor([7, 7], dtype=torch.int32))  # not in place


def test_connectivity_decides_diagonal_neighbours():
    inst = torch.zeros(3, 3, 1, dtype=torch.int64)
    occ = torch.zeros(3, 3, 1, dtype=torch.bool)
    for xy in ((0, 0), (1, 0), (2, 1)):  # (2, 1) touches (1, 0) only by an edge
        inst[xy[0], xy[1], 0], occ[xy[0], xy[1], 0] = 4, True
    assert keep_largest_occupied_piece(inst, occ, 26)[2, 1, 0] == 4
    assert keep_largest_occupied_piece(inst, occ, 6)[2, 1, 0] == 0


def test_bad_arguments():
    inst, occ = torch.zeros(2, 2, 2, dtype=torch.int32), torch.zeros(2, 2, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match='connectivity'):
        keep_largest_occupied_piece(inst, occ, 8)
    with pytest.raises(ValueError, match='one \\(X, Y, Z\\) shape'):
        keep_largest_occupied_piece(inst, occ[0])


def test_split_on_predicted_occupancy_uses_the_semantic_argmax():
    from trackocc.models.heads.instance_split import split_on_predicted_occupancy
    inst = torch.zeros(6 * 4 * 2, dtype=torch.int32)
    inst.view(6, 4, 2)[0:6, 0, 0] = 7
    sem_logits = torch.zeros(1, 3, 6, 4, 2)
    sem_logits[0, 2] = 1.0                   # class 2 = free everywhere ...
    sem_logits[0, 0, 0:3, 0, 0] = 2.0        # ... but two occupied pieces of instance 7
    sem_logits[0, 1, 4:6, 0, 0] = 2.0
    out = split_on_predicted_occupancy(inst, sem_logits, (6, 4, 2), free_class=2)
    assert out.shape == inst.shape
    assert out.view(6, 4, 2)[:, 0, 0].tolist() == [7, 7, 7, 7, 0, 0]
    with pytest.raises(ValueError, match='semantic branch'):
        split_on_predicted_occupancy(inst, None, (6, 4, 2), free_class=2)
