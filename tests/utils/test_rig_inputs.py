"""RigInputs: a camera rig's inputs kept at fixed addresses, rewritten in place per rig."""
from typing import NamedTuple

import pytest
import torch

from trackocc.utils.cuda_graph import is_static_input
from trackocc.utils.rig_inputs import RigInputs


class Pair(NamedTuple):
    order: torch.Tensor
    valid: torch.Tensor


def test_a_new_rig_is_written_into_the_same_buffers():
    rig = RigInputs()
    assert rig.get('a') is None and rig.get(None) is None
    first = rig.store('a', Pair(torch.arange(4), torch.ones(4, dtype=torch.bool)))
    assert isinstance(first, Pair) and rig.get('a') is first
    assert all(is_static_input(t) for t in first)
    ptrs = [t.data_ptr() for t in first]
    second = rig.store('b', Pair(torch.arange(4).flip(0), torch.zeros(4, dtype=torch.bool)))
    assert [t.data_ptr() for t in second] == ptrs and rig.allocations == 1
    assert torch.equal(second.order, torch.tensor([3, 2, 1, 0])) and not second.valid.any()
    assert rig.get('a') is None and rig.get('b') is second
    grown = rig.store('c', Pair(torch.arange(5), torch.ones(5, dtype=torch.bool)))
    assert rig.allocations == 2 and grown.order.data_ptr() != ptrs[0]
    rig.clear()
    assert rig.get('c') is None


def test_a_rig_needs_a_key():
    with pytest.raises(ValueError, match='needs a key'):
        RigInputs().store(None, torch.zeros(2))


def test_held_inputs_are_contiguous():
    """A sliced value (the plan's ``argsort(...)[:, :L]``) is held contiguous: one layout
    whatever the slice, the one a graph's warm-up copies and its capture both see."""
    rig = RigInputs()
    held = rig.store('a', torch.arange(12).view(3, 4)[:, :2])
    assert held.is_contiguous() and torch.equal(held, torch.tensor([[0, 1], [4, 5], [8, 9]]))
