"""MMEngine's optimizer wrappers whose gradient clipping logs the norm without a host wait.

``OptimWrapper._clip_grad`` writes the clipped gradients' norm into the message hub with
``float(norm)``: a host wait for the whole backward pass in every iteration on a GPU. With a
:class:`~trackocc.engine.deferred_scalars.DeferredScalars` store installed in the hub (by
:class:`~trackocc.engine.hooks.HostSyncFreeRuntimeInfoHook`), these wrappers hand it the norm
tensor instead; the hub receives the same number when the store is flushed. Without a store
they are MMEngine's wrappers. The clipping itself (``torch.nn.utils.clip_grad_norm_``) never
reads the norm on the host.
"""
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from trackocc.registry import OPTIM_WRAPPERS

from .deferred_scalars import DeferredScalars

# the AMP wrapper of each full-precision one (``tools/train.py --amp``, the benchmark's AMP
# modes); the values are the AMP wrappers
AMP_OPTIM_WRAPPERS = {'OptimWrapper': 'AmpOptimWrapper',
                      'HostSyncFreeOptimWrapper': 'HostSyncFreeAmpOptimWrapper'}


class DeferredGradNormMixin:
    """``_clip_grad`` that adds the norm to the message hub's deferred store, if any."""

    def _clip_grad(self) -> None:
        store = DeferredScalars.of(self.message_hub)
        if store is None:
            return super()._clip_grad()
        params = [p for group in self.optimizer.param_groups for p in group['params']
                  if p.requires_grad and p.grad is not None]
        if params:
            norm = self.clip_func(params, **self.clip_grad_kwargs)
            if norm is not None:  # clip_grad_value_ returns None
                store.add(f'train/{self.grad_name}', norm)


@OPTIM_WRAPPERS.register_module()
class HostSyncFreeOptimWrapper(DeferredGradNormMixin, OptimWrapper):
    """:class:`mmengine.optim.OptimWrapper` logging the gradient norm through the deferred
    store (:class:`DeferredGradNormMixin`)."""


@OPTIM_WRAPPERS.register_module()
class HostSyncFreeAmpOptimWrapper(DeferredGradNormMixin, AmpOptimWrapper):
    """:class:`mmengine.optim.AmpOptimWrapper` logging the gradient norm through the deferred
    store (:class:`DeferredGradNormMixin`); with a fused optimizer (``fused=True``) the loss
    scaler's step does not wait for the device either."""
