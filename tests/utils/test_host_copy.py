"""HostCopy: a tensor's copy to the host started without a wait, read later."""
import pytest
import torch

from host_reads import no_device_waits
from trackocc.utils.host_copy import HostCopy


def test_the_copy_holds_the_values_at_its_start():
    t = torch.arange(6.).reshape(2, 3).requires_grad_()
    copy = HostCopy(t * 2)
    result = copy.result()
    assert torch.equal(result, torch.arange(6.).reshape(2, 3) * 2)
    assert not result.requires_grad and result.device.type == 'cpu'
    assert copy.result() is result  # read once, kept


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_starting_a_copy_from_the_gpu_does_not_wait():
    x = torch.randn(1000, device='cuda')
    HostCopy(x).result()  # first call: the pinned block
    with no_device_waits():
        y = x @ x  # queued work the copy comes after
        copy = HostCopy(torch.stack([y, x.sum()]))
    result = copy.result()
    assert result.is_pinned()
    torch.testing.assert_close(result, torch.stack([x @ x, x.sum()]).cpu())
