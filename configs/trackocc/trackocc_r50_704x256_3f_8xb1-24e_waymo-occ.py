# TrackOcc (ICRA 2025), the paper model: ResNet-50 + FPN, 5 cameras at 704x256, LSS to a
# 200x200x16 volume, 3D ResNet + FPN to 50x50x16, occupancy encoder, 200 thing (track) + 50 stuff
# queries, 3-frame clips, 24 epochs on 8 GPUs x 1 clip, AdamW 2e-4, AMP, SyncBN, EMA.
# The training recipe is the one the original ran (docs/deviations.md): constant learning rate,
# its EMA, BGR input, seed 0, fp16 testing, nuImages-pretrained image backbone. The same model
# with the fixes of the original's unintended behaviour: ..._waymo-occ_improved.py.
_base_ = [
    '../_base_/models/trackocc_r50.py',
    '../_base_/datasets/waymo-trackocc.py',
    '../_base_/schedules/constant-24e.py',
    '../_base_/default_runtime.py',
]

# the tracked classes of the data set (the head takes the detector's)
model = dict(thing_classes={{_base_.thing_classes}})
# SyncBN across GPUs (the original: sync_bn=True), its statistics pooled without a host wait
# per layer (HostSyncFreeDDP; the same results as torch's SyncBN, docs/benchmark.md).
sync_bn = 'torch'
model_wrapper_cfg = dict(type='HostSyncFreeDDP', broadcast_buffers=False,
                         find_unused_parameters={{_base_.find_unused_parameters}})
# The original's EMA (BEVDepth's MEGVIIEMAHook, init_updates=10560): decay
# 0.999 * (1 - exp(-(10560 + k) / 2000)) at update k (0.99392 at k = 1), parameters and BN
# buffers, averaged from the weights training starts with; validation uses the EMA weights.
custom_hooks = [
    dict(type='InitialWeightsEMAHook', ema_type='RampedDecayEMA', decay=0.999,
         init_updates=10560, ramp_updates=2000, update_buffers=True, priority=49),
]
# a checkpoint every 12 epochs, at each validation (mmengine substitutes a base variable as a
# whole value: arithmetic on one gives a string)
default_hooks = dict(checkpoint=dict(interval={{_base_.train_cfg.val_interval}}))
# The original's train.py seeded everything with 0 unless told otherwise (--seed overrides).
randomness = dict(seed=0)
