#!/usr/bin/env bash
# The GPU session's `tracks` phase, emulated on the CPU (2 cores, 2026-12-04, ~15 min): paper
# config, random weights (birth threshold raised to 0.98 so that the tracks fit the budget of
# 400 rows: 2 births a frame), one synthetic held-out sequence of 6 frames at 960 x 640
# (tools/create_data.py synthetic --out-dir /tmp/glue/data --train-seqs 0 --val-seqs 1
#  --frames-per-seq 6 --seed 3 --image-size 960 640). A: the hook's default fast path with fixed
# rig inputs; B: + fixed track rows, the tracking as two graphs. Result (paper_emul.json.gz):
# both predict exactly what fp32 eager predicts on every frame (occupied voxels, births, OccSTQ;
# guard 0.0 / 0.0 points), every graph captured once, track_carry / track_settle replayed in B.
set -euo pipefail
G="img_backbone img_neck img_view_transformer volume_encoder_backbone volume_encoder_neck"
G="$G occ_encoder pts_bbox_head panoptic_merge"
python tools/analysis_tools/benchmark.py \
  configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py \
  --data-root ${DATA:-/tmp/glue/data} --device cpu --mode fp32 graph --query-budget 400 \
  --warmup 2 --graph-modules $G --graph-stable-outputs img_view_transformer occ_encoder \
  --graph-rekey-warmup 0 --fixed-rig-inputs --emulate-graphs --ab-fixed-track-rows \
  --ab-graph-modules track_carry track_settle --ab-ungraph-modules panoptic_merge \
  --ab-rounds 1 --cfg-options model.tracker.score_thresh=0.98 model.score_threshold=0.98 \
  --json ${OUT:-paper_emul.json}
