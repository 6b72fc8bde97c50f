#!/usr/bin/env bash
# One GPU session (one H200) for issue 16 item 2: the merge replayed as a CUDA graph
# (`--graph-modules ... panoptic_merge`, on the head's budget rows) and the tracking modules
# compiled (`--graph-compile-modules ... query_interaction memory_bank`), timed on the
# 240-frame held-out stream with a trained checkpoint made again (the learning-check recipe,
# 900 iterations at batch 2). As merge_bench_h200_2026-12-03/gpu_session.sh, but the training
# starts as soon as the extension and the data are there and the GPU tests run beside it (no
# benchmark_ops: the merge kernel was timed then). Code runs from /tmp/w; results in $OUT.
#   go       (in the last wheel-staging call, after `gpu_env.sh install && . /tmp/gpu_env`);
#            ITERS (default 900) training iterations, TESTS_S (400; 300 until 2026-12-04, when
#            74 tests beside the training needed all of it) seconds for the GPU tests (pytest
#            unbuffered, so a timeout keeps the log), FOLLOW (470) seconds from the call's
#            start to follow the training, EXTRA_TESTS
#            more test files for the GPU tests (ab_rounds_h200_2026-12-03). As run on
#            2026-12-03: first plain (tests 18 passed, machine then lost to a >30 s gap between
#            calls), then on a fresh machine ITERS=600 TESTS_S=1 FOLLOW=505 (the device time left)
#   wait S   follow the run (long_run_h200_2026-12-01/gpu_session.sh wait)
#   bench TAG ARGS...  one benchmark.py process on the run's last checkpoint
#            (trained_bench_h200_2026-12-01/gpu_session.sh bench; VAL=/tmp/lc/data/vlong), e.g.
#            C="occ_encoder.upsampler occ_encoder.fuse_conv occ_encoder.layers.0
#               volume_encoder_backbone volume_encoder_neck img_backbone img_neck
#               img_view_transformer.depth_net pts_bbox_head.sem_head"
#            G="img_backbone img_neck img_view_transformer volume_encoder_backbone
#               volume_encoder_neck occ_encoder pts_bbox_head"
#            bench TAG --graph-compile-modules $C [query_interaction memory_bank] --tf32-matmul
#              [--graph-modules $G panoptic_merge] [--profile /tmp/bench/prof_TAG_]
#            run: mg_tc (both). Next: the checkpoint at 900 iterations, then processes
#            alternating between "all" alone and mg_tc on the one checkpoint (the host varies
#            between processes: one of each says nothing), comparing steady_state.stage_ms.
set -uo pipefail
here=docs/benchmark_runs
case ${1:?PHASE: go, wait or bench} in
  wait|bench) exec bash $here/merge_bench_h200_2026-12-03/gpu_session.sh "$@" ;;
  go) ;;
  *) echo "unknown phase $1"; exit 2 ;;
esac
. /tmp/gpu_env
. $here/gpu_tree_setup.sh  # W, R, S, M, LC, t_start and the functions below
tree_data_ext || exit 1
recipe_and_held_out ${ITERS:-900}
timeout ${TESTS_S:-400} python -u -m pytest -m gpu tests/models/test_query_budget.py \
  tests/ops/test_panoptic_merge_stats.py tests/utils/test_cuda_graph.py \
  tests/models/test_merge_logits_dtype.py tests/models/test_sync_free_inference.py \
  tests/models/test_panoptic_merge.py tests/tools/test_benchmark_fast_path_options.py \
  ${EXTRA_TESTS:-} -q -rs -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc $? at $(( $(date +%s) - t_start )) s"; tail -6 $OUT/gpu_tests.log
follow_until ${FOLLOW:-470}  # install ran before
