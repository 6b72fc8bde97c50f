# One H200, after gpu_env.sh install: build the CUDA ops (the .so comes back), then the paper
# config on the synthetic stream (random weights, 64 live tracks): fp32 eager vs graph-bf16 with
# folded batch norms, the head graphed under a fixed query budget, and autocast weights.
set -u
. /tmp/gpu_env
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
t0=$(date +%s)
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $OUT/build.log 2>&1; echo "build rc=$? $(( $(date +%s) - t0 )) s"
cp trackocc/_ext*.so $OUT/ 2>/dev/null
B=tools/analysis_tools/benchmark.py; CFG=configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py
G="img_backbone img_neck img_view_transformer volume_encoder_backbone volume_encoder_neck occ_encoder pts_bbox_head"
timeout ${BENCH_LIMIT:-140} python $B $CFG --fuse-conv-bn --mode fp32 graph-bf16 --frames 60 --warmup 10 \
  --max-live-tracks 64 --query-budget 264 --graph-modules $G --autocast-weights --keep-going \
  --json $OUT/bench_paper_graph_head.json > $OUT/bench.log 2>&1; echo "bench rc=$? $(( $(date +%s) - t0 )) s"
grep "^\[benchmark\]" $OUT/bench.log | cut -c1-900; grep -iE "error|Traceback" $OUT/bench.log | head -5
