#!/usr/bin/env bash
# One H200, after the staging calls of train_step_h200_2026-12-03/restage.sh (no checkpoint):
#   bash docs/benchmark_runs/train_backward_h200_2026-12-05/run.sh build   # ext + GPU tests
#   bash docs/benchmark_runs/train_backward_h200_2026-12-05/run.sh ab      # training A/B
#   bash docs/benchmark_runs/train_backward_h200_2026-12-05/run.sh profile # one profiled run
# Files go to $OUT.
set -uo pipefail
. /tmp/gpu_env
t0=$(date +%s)
CFG=configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py
case ${1:?build, ab or profile} in
  build)
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace \
      > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
    echo "ext built at $(( $(date +%s) - t0 )) s"
    timeout ${TESTS_S:-300} python -m pytest -m gpu tests/models/test_frame_grouped_norm.py \
      tests/models/test_clip_feature_batch.py tests/models/test_data_preprocessor.py \
      tests/utils/test_sync_batch_norm.py -q -rs -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
    echo "gpu tests rc $? at $(( $(date +%s) - t0 )) s"; tail -8 $OUT/gpu_tests.log ;;
  ab)
    python tools/analysis_tools/benchmark.py $CFG --train --mode bf16 --frames 20 --warmup 5 \
      --ab-setting clip_feature_batch=False --ab-rounds 2 --json $OUT/train_ab.json \
      > $OUT/train_ab.log 2>&1
    echo "train ab rc $? at $(( $(date +%s) - t0 )) s"; grep -v "^ *-" $OUT/train_ab.log | tail -40 ;;
  profile)
    python tools/analysis_tools/benchmark.py $CFG --train --mode bf16 --frames 10 --warmup 3 \
      --profile $OUT/ptrain_ --profile-steps 2 --json $OUT/train_profile.json \
      > $OUT/train_profile.log 2>&1
    echo "train profile rc $? at $(( $(date +%s) - t0 )) s"; grep -v "^ *-" $OUT/train_profile.log | tail -25
    head -3 $OUT/ptrain_bf16.txt | cut -c1-600 ;;
esac
