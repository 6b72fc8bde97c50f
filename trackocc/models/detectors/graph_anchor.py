"""Zero-weight graph anchor: puts parameters into a loss graph without changing its value.

Data-parallel training without ``find_unused_parameters`` needs every trainable parameter
to receive a gradient in every iteration. The query interaction and the memory bank only act
on carried tracks, so a clip without any (no thing in its first frames) leaves them out of the
graph; with ``find_unused_parameters=True`` DDP copes by walking the autograd graph after every
forward pass. :func:`zero_weight_anchor` instead adds ``0 x`` one element of each parameter of
those modules to the losses: their value is unchanged, every parameter always gets a gradient
(zero where the clip did not use it) and DDP's bucketed all-reduce can run as a static graph.
"""
from typing import Iterable, Optional

import torch
from torch import Tensor, nn


def zero_weight_anchor(modules: Iterable[Optional[nn.Module]]) -> Optional[Tensor]:
    """() scalar 0 that depends on one element of every trainable parameter of ``modules``
    (None entries skipped); None when they have no trainable parameter.

    Its backward pass gives each of those parameters an all-zero gradient (one fill per
    parameter, no host synchronisation)."""
    firsts = [p.view(-1)[:1] for m in modules if m is not None
              for p in m.parameters() if p.requires_grad and p.numel() > 0]
    if not firsts:
        return None
    return torch.cat([f.float() for f in firsts]).sum() * 0.0
