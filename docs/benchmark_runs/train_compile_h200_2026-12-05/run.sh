#!/usr/bin/env bash
# One H200, after the staging calls of train_step_h200_2026-12-03/restage.sh (no checkpoint):
#   bash docs/benchmark_runs/train_compile_h200_2026-12-05/run.sh build     # ext + GPU tests
#   bash docs/benchmark_runs/train_compile_h200_2026-12-05/run.sh compile   # bf16, compile-bf16
#   bash docs/benchmark_runs/train_compile_h200_2026-12-05/run.sh overhead  # reduce-overhead
#   bash docs/benchmark_runs/train_compile_h200_2026-12-05/run.sh train TAG ARGS...  # one process
#   bash docs/benchmark_runs/train_compile_h200_2026-12-05/run.sh pair TAG ARGS...  # A B A B
#   bash docs/benchmark_runs/train_compile_h200_2026-12-05/run.sh profile TAG [ARGS...]
#   bash docs/benchmark_runs/train_compile_h200_2026-12-05/run.sh ddp TAG [ARGS...]  # x2 only
# ddp (issue 16 item 3's setting, not run yet: x2 was not lent): the paper config on 2 GPUs
# with the config's data-parallel wrapper, eager bf16 then the training default modules
# compiled, in one torchrun job (iter_time.mean_ms: the slowest rank's mean).
# pair: four processes alternating, bf16 as configured (A) and bf16 with ARGS (B): a change
# that is not a model setting (--ab-setting), timed against the spread between processes.
# Sixteenth session (not run yet): A = no host wait at an iteration's end (the config's
# HostSyncFreeRuntimeInfoHook, HostSyncFreeAmpOptimWrapper, fused AdamW), B = MMEngine's:
#   run.sh pair old --cfg-options default_hooks.runtime_info.type=RuntimeInfoHook \
#     optim_wrapper.type=AmpOptimWrapper optim_wrapper.optimizer.fused=False
# compare wall_ms_per_iter in the JSONs (the pair line shows iter_time). PAIR_MODE (bf16):
# both sides' benchmark mode, e.g. compile-bf16 (then PAIR_WARMUP=8: the compiles).
# WIDE: the default compiled modules plus the depth net and the mask-feature upsampler.
# The training iteration (paper config, bf16, batch 1) eager and with the dense sub-networks
# (benchmark.py's --compile-modules default: image backbone and neck, volume encoder backbone
# and neck) compiled by Inductor, without and with its CUDA-graph trees. Files go to $OUT.
set -uo pipefail
. /tmp/gpu_env
t0=$(date +%s)
WIDE="img_backbone img_neck img_view_transformer.depth_net volume_encoder_backbone
  volume_encoder_neck occ_encoder.upsampler"
CFG=configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py
B="python tools/analysis_tools/benchmark.py $CFG --train"
show() { grep -v "^ *-" $1 | grep -v "^\s*$" | tail -${2:-30}; }
case ${1:?build, compile, overhead or profile} in
  build)
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace \
      > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
    echo "ext built at $(( $(date +%s) - t0 )) s"
    timeout ${TESTS_S:-240} python -m pytest -m gpu tests/models/test_clip_feature_batch.py \
      tests/engine/test_compile_modules_hook.py tests/engine/test_ramped_decay_ema.py \
      tests/models/test_frame_grouped_norm.py tests/utils/test_sync_batch_norm.py \
      tests/engine/test_fused_optimizer.py tests/engine/test_host_sync_free_logging.py \
      tests/models/test_training_syncs.py tests/utils/test_host_copy.py \
      tests/models/test_trackers.py \
      -q -rs -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
    echo "gpu tests rc $? at $(( $(date +%s) - t0 )) s"; tail -8 $OUT/gpu_tests.log ;;
  compile)
    $B --mode bf16 compile-bf16 --frames 20 --warmup 8 --keep-going --json $OUT/train_compile.json \
      > $OUT/train_compile.log 2>&1
    echo "compile rc $? at $(( $(date +%s) - t0 )) s"; show $OUT/train_compile.log ;;
  overhead)
    $B --mode compile-bf16 --compile-mode reduce-overhead --frames 20 --warmup 8 --keep-going \
      --json $OUT/train_overhead.json > $OUT/train_overhead.log 2>&1
    echo "overhead rc $? at $(( $(date +%s) - t0 )) s"; show $OUT/train_overhead.log ;;
  train)
    tag=${2:?TAG}; shift 2
    $B --frames 20 --warmup 8 --keep-going --json $OUT/train_$tag.json "$@" \
      > $OUT/train_$tag.log 2>&1
    echo "train $tag rc $? at $(( $(date +%s) - t0 )) s"; show $OUT/train_$tag.log ;;
  pair)
    tag=${2:?TAG}; shift 2
    for r in 1 2; do
      for side in a b; do
        extra=(); [ $side = b ] && extra=("$@")
        $B --mode ${PAIR_MODE:-bf16} --frames 20 --warmup ${PAIR_WARMUP:-5} \
          --json $OUT/pair_${tag}_$side$r.json "${extra[@]}" \
          > $OUT/pair_${tag}_$side$r.log 2>&1
        echo "$side$r rc $? at $(( $(date +%s) - t0 )) s: $(grep -o '"iter_time": {[^}]*}' \
          $OUT/pair_${tag}_$side$r.json | head -1) $(grep -o '"wall_ms_per_iter": [0-9.]*' \
          $OUT/pair_${tag}_$side$r.json | head -1)"
      done
    done ;;
  ddp)
    tag=${2:?TAG}; shift 2
    PORT=29510 bash tools/analysis_tools/dist_benchmark.sh $CFG 2 --train --mode bf16 \
      compile-bf16 --frames 20 --warmup 8 --json $OUT/ddp_$tag.json "$@" > $OUT/ddp_$tag.log 2>&1
    echo "ddp $tag rc $? at $(( $(date +%s) - t0 )) s"; show $OUT/ddp_$tag.log ;;
  profile)
    tag=${2:?TAG}; shift 2
    $B --frames 10 --warmup 5 --profile $OUT/p${tag}_ --profile-steps 2 \
      --json $OUT/train_profile_$tag.json "$@" > $OUT/train_profile_$tag.log 2>&1
    echo "profile rc $? at $(( $(date +%s) - t0 )) s"; show $OUT/train_profile_$tag.log 20
    head -3 $OUT/p${tag}_*.txt | cut -c1-600 ;;
esac
