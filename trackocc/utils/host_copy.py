"""A tensor's copy to the host, started without waiting for the device."""
from typing import Optional

import torch
from torch import Tensor


class HostCopy:
    """The copy of ``tensor`` (detached) to host memory, queued now and read later.

    From a CUDA device the copy goes to pinned memory on the current stream without a host
    wait, and a CUDA event marks its end: :meth:`result` waits for that event only, which
    returns at once when the host already waited for later work (e.g. a blocking read
    queued after it). From other devices it is a plain copy, done at once.
    """

    def __init__(self, tensor: Tensor):
        tensor = tensor.detach()
        self._ready: Optional[torch.cuda.Event] = None
        if tensor.is_cuda:
            with torch.cuda.device(tensor.device):  # the event on the copy's stream
                self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                self._host.copy_(tensor, non_blocking=True)
                self._ready = torch.cuda.Event()
                self._ready.record()
        else:
            self._host = tensor.cpu()

    def result(self) -> Tensor:
        """The host tensor, once its copy has finished."""
        if self._ready is not None:
            self._ready.synchronize()
            self._ready = None
        return self._host
