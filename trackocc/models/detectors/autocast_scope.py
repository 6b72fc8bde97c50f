"""Where mixed precision applies inside :class:`TrackOcc` (its ``autocast_scope`` argument).

The reference ran AMP through mmcv's ``auto_fp16`` / ``force_fp32`` decorators: its
``forward_train`` was ``force_fp32`` (autocast off) and only the image encoder (backbone +
neck), the 3D volume encoder (backbone + neck) and the head's forward (occupancy encoder, mask
decoder, class / mask / centre / semantic predictions) were ``auto_fp16`` regions whose
outputs were cast back to float32. The view transformer, all losses and matching, the memory
bank, the query interaction, the tracker and the panoptic merge ran in float32, in training
and (the test script wrapped the model the same way) at inference.
"""
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

AUTOCAST_SCOPES = ('reference', 'all')


def to_float32(x: Any) -> Any:
    """A floating tensor of another dtype as float32; anything else as is."""
    if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
    return x


class AutocastScope:
    """Mixed-precision regions of one ``loss`` / ``predict`` call.

    Built from the caller's autocast state on ``device_type`` (``AmpOptimWrapper``, the test
    loop's ``fp16``, or a ``torch.autocast`` block). With ``scope='all'`` nothing changes: the
    caller's autocast covers the whole call. With ``scope='reference'`` and autocast on,
    :meth:`outside` turns it off for the call and :meth:`region` turns it back on (same
    dtype) for one sub-network, returning its floating outputs as float32. Without autocast
    both are no-ops.

    Args:
        scope (str): ``'reference'`` or ``'all'``.
        device_type (str): device type of the inputs (``'cuda'``, ``'cpu'``).
    """

    def __init__(self, scope: str, device_type: str) -> None:
        if scope not in AUTOCAST_SCOPES:
            raise ValueError(f'autocast_scope must be one of {AUTOCAST_SCOPES}, got {scope!r}')
        self.device_type = device_type
        self.active = scope == 'reference' and torch.is_autocast_enabled(device_type)
        self.dtype = torch.get_autocast_dtype(device_type) if self.active else None

    def outside(self):
        """Context of everything outside the regions (float32 when active)."""
        if not self.active:
            return nullcontext()
        return torch.autocast(self.device_type, enabled=False)

    def region(self, fn: Callable, *args, cast_outputs: bool = True,
               uncast_keys: Sequence[str] = (), **kwargs) -> Any:
        """``fn(*args, **kwargs)`` under the caller's autocast; floating outputs as float32
        unless ``cast_outputs=False`` (a region that another region continues).

        ``uncast_keys``: entries of a dict output left in the autocast dtype, for outputs
        whose every consumer widens each element to float32 itself (then the results are the
        same bit for bit, and the (Q, X*Y*Z) copy in float32 is not written)."""
        if not self.active:
            return fn(*args, **kwargs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = fn(*args, **kwargs)
        if not cast_outputs:
            return out
        if not uncast_keys:
            return tree_map(to_float32, out)
        if not isinstance(out, dict):
            raise TypeError(f'AutocastScope.region: uncast_keys {tuple(uncast_keys)} name dict '
                            f'entries, but {getattr(fn, "__name__", fn)} returned '
                            f'{type(out).__name__}')
        return {k: v if k in uncast_keys else tree_map(to_float32, v) for k, v in out.items()}
