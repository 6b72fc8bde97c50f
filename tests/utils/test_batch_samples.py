"""``batch_samples``: the samples of a batch as views whose backward joins the samples'
gradients once (no zero-filled gradient of the whole batch per sample)."""
import pytest
import torch

from trackocc.analysis.train_ops import backward_nodes
from trackocc.utils.batch_samples import batch_samples


@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('keepdim', [False, True])
def test_samples_equal_indexing_and_their_gradients(batch, keepdim):
    x = torch.randn(batch, 4, 5, dtype=torch.float64)
    weights = torch.randn(batch, 4, 5, dtype=torch.float64)
    grads = []
    for split in (True, False):
        xr = x.clone().requires_grad_(True)
        if split:
            samples = batch_samples(xr, keepdim)
        else:
            samples = [xr[b:b + 1] if keepdim else xr[b] for b in range(batch)]
        assert len(samples) == batch
        total = sum(((s.squeeze(0) if keepdim else s) * weights[b]).sum()
                    for b, s in enumerate(samples))
        nodes = backward_nodes(total)
        total.backward()
        grads.append(xr.grad)
        for b, s in enumerate(samples):
            assert s.shape == ((1, 4, 5) if keepdim else (4, 5))
            torch.testing.assert_close(s.detach().reshape(4, 5), x[b], rtol=0, atol=0)
        if split:  # no per-sample slice or select of the batch
            assert not {'SliceBackward0', 'SelectBackward0'} & set(nodes)
            if batch == 1 and keepdim:
                assert not {'SplitBackward0', 'UnbindBackward0'} & set(nodes)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
