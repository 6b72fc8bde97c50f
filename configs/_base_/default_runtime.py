# plain type names resolve in trackocc's registries, then mmdet3d's and MMEngine's; the
# trackocc subpackage a lookup needs is imported then (trackocc/registry.py, ``locations``)
default_scope = 'trackocc'
# the hooks, and the checkpoint safe globals that resume needs under torch>=2.6
custom_imports = dict(imports=['trackocc.engine'], allow_failed_imports=False)

default_hooks = dict(
    # MMEngine's, with the training scalars read back where the logger reads them, not in
    # every iteration (no host wait per iteration; the same logs)
    runtime_info=dict(type='HostSyncFreeRuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    # MMEngine's, with the test JSON log written once (main process), atomically
    logger=dict(type='SingleWriterLoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='OccVisualizationHook', draw=False),
    # one line at the end of a test: frames streamed over all ranks, seconds, frames/s
    stream_throughput=dict(type='StreamThroughputHook'),
    # Python's collector every 100 iterations (everything every 1000), not inside them
    garbage_collection=dict(type='GarbageCollectionHook', interval=100, full_interval=1000),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)

visualizer = dict(type='OccupancyVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')

log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
