"""The data-parallel wrapper of the TrackOcc configs."""
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

from ..utils.sync_batch_norm import convert_to_host_sync_free


# In MMEngine's own registry: ``Runner.wrap_model`` looks ``model_wrapper_cfg.type`` up there,
# without the default scope (a wrapper in trackocc's child registry would not be found).
@MODEL_WRAPPERS.register_module()
class HostSyncFreeDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose ``torch.nn.SyncBatchNorm`` layers (from
    ``sync_bn='torch'``, converted before the wrapper is built) pool their statistics on the
    device (:class:`~trackocc.utils.sync_batch_norm.HostSyncFreeSyncBatchNorm`):
    the same results without a host wait per layer. Takes the arguments of
    ``MMDistributedDataParallel``; use it as ``model_wrapper_cfg=dict(type='HostSyncFreeDDP',
    ...)``."""

    def __init__(self, module: nn.Module, **kwargs) -> None:
        super().__init__(module=convert_to_host_sync_free(module), **kwargs)
