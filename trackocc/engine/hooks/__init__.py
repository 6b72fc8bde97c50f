"""Hooks registered into ``trackocc.registry.HOOKS``."""
from .compile_modules_hook import CompileModulesHook
from .fast_inference_hook import FastInferenceHook
from .garbage_collection_hook import GarbageCollectionHook
from .host_sync_free_runtime_info_hook import HostSyncFreeRuntimeInfoHook
from .initial_weights_ema_hook import InitialWeightsEMAHook
from .merge_audit_hook import MergeAuditHook
from .occ_visualization_hook import OccVisualizationHook
from .safe_checkpoint_hook import SafeCheckpointHook
from .single_writer_logger_hook import SingleWriterLoggerHook
from .stream_throughput_hook import StreamThroughputHook

__all__ = ['CompileModulesHook', 'FastInferenceHook', 'GarbageCollectionHook',
           'HostSyncFreeRuntimeInfoHook', 'InitialWeightsEMAHook', 'MergeAuditHook',
           'OccVisualizationHook', 'SafeCheckpointHook',
           'SingleWriterLoggerHook', 'StreamThroughputHook']
