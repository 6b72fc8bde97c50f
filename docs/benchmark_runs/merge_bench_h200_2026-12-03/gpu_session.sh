#!/usr/bin/env bash
# One GPU session (one H200) for issue 16 item 2 at the current code: a trained checkpoint made
# again (the learning-check recipe, 900 iterations at batch 2, as on 2026-12-01) and timed on
# the 240-frame held-out stream. Code runs from /tmp/w; results come back in $OUT.
#   go       (in the last wheel-staging call, after `gpu_env.sh install && . /tmp/gpu_env`)
#            copy of the tree, CUDA extension beside the training data, GPU tests of the merge
#            and the graphs, benchmark_ops merge on the idle GPU, then the training in the
#            background (long_run_h200_2026-12-01/gpu_session.sh's recipe, without the watch's
#            evaluations: the benchmark scores the checkpoint on the 240 frames) and the
#            240-frame held-out set beside it; follows the run until the call's end
#   wait S   follow the run (long_run_h200_2026-12-01/gpu_session.sh wait)
#   bench TAG ARGS...  one benchmark.py process on the run's last checkpoint
#            (trained_bench_h200_2026-12-01/gpu_session.sh bench; VAL=/tmp/lc/data/vlong);
#            as run, the fast path with every sub-network compiled ("all") and TF32:
#            bench TAG --graph-compile-modules $C --tf32-matmul [--profile /tmp/bench/prof_TAG_]
#            C="occ_encoder.upsampler occ_encoder.fuse_conv occ_encoder.layers.0
#               volume_encoder_backbone volume_encoder_neck img_backbone img_neck
#               img_view_transformer.depth_net pts_bbox_head.sem_head"
#            next (written after this session's runs, not run yet; test_query_budget.py was
#            added to `go`'s GPU tests then): the merge graphed and the tracking compiled,
#            bench TAG --graph-compile-modules $C query_interaction memory_bank --tf32-matmul
#              --graph-modules img_backbone img_neck img_view_transformer volume_encoder_backbone
#              volume_encoder_neck occ_encoder pts_bbox_head panoptic_merge
set -uo pipefail
phase=$1; shift
here=docs/benchmark_runs
. $here/gpu_tree_setup.sh  # W, R, S, M, LC, t_start and its functions
case $phase in
  go)
    . /tmp/gpu_env
    tree_data_ext || exit 1
    python -m pytest -m gpu tests/ops/test_panoptic_merge_stats.py tests/utils/test_cuda_graph.py \
      tests/models/test_merge_logits_dtype.py tests/models/test_sync_free_inference.py \
      tests/models/test_panoptic_merge.py tests/ops/test_model_cuda_e2e.py \
      tests/tools/test_benchmark_fast_path_options.py tests/models/test_query_budget.py \
      -q -rs -p no:cacheprovider \
      > $OUT/gpu_tests_merge.log 2>&1
    tail -4 $OUT/gpu_tests_merge.log
    python tools/analysis_tools/benchmark_ops.py --ops merge --iters 50 --warmup 10 \
      --out $OUT/ops_merge.md > $OUT/ops_merge.log 2>&1; echo "ops merge rc $?"; cat $OUT/ops_merge.md
    recipe_and_held_out 900
    follow_until 480  # install ran before
    ;;
  wait)
    bash $here/long_run_h200_2026-12-01/gpu_session.sh wait "${1:-560}"
    tail -2 /tmp/lc/vlong.log
    ;;
  bench)
    VAL=${VAL:-$R/vlong} bash $here/trained_bench_h200_2026-12-01/gpu_session.sh bench "$@"
    ;;
esac
