#!/usr/bin/env bash
# One GPU session (one H200) for issue 16 item 2: the merge as a CUDA graph and the tracking
# compiled, timed against the fast path without them in the same process (benchmark.py --ab-*:
# graph-bf16 as A, B, A, B), on the 240-frame held-out stream with the recipe's checkpoint
# trained again (900 iterations at batch 2). The host's speed differs between processes by more
# than the change under test (2026-12-02/03: 80-111 FPS for one command), hence one process.
#   go          merge_graph_h200_2026-12-03/gpu_session.sh go, with the GPU tests of the A/B
#               switch and of stable graph outputs added (ITERS, TESTS_S, FOLLOW as there;
#               LONG_SEQS=1: also the held-out set vseq, see gpu_tree_setup.sh)
#   carried NAME  instead of go + wait, without training (~5 min against ~13): in the last
#               staging call of `restage.sh 18 work_dirs/ckpt/NAME` (after `gpu_env.sh install
#               && . /tmp/gpu_env`): the tree in /tmp/w, the CUDA extension, the held-out sets
#               vlong (and vseq with LONG_SEQS=1) made beside the GPU tests of go, and the
#               checkpoint NAME (fp16 weights from bring-ckpt, e.g.
#               learning_check_iter_900-ae88d32d.pth, the sha256 prefix in the name checked)
#               put where ab / stable / carry / rekey / bench look ($S/carried/iter_900.pth)
#   wait S      follow the run
#   ab TAG [ROUNDS] [ARGS...]  one benchmark.py process on the run's last checkpoint: fp32 eager,
#               then ROUNDS (default 2) rounds of graph-bf16 with every dense sub-network
#               compiled and graphed ("all", TF32) without (A) and with (B) the merge graphed
#               and query_interaction / memory_bank compiled; ab_summary in bench_TAG.json
#   stable TAG [ROUNDS] [ARGS...]  as ab, but A is ab's B (the merge graphed, the tracking
#               compiled) and B adds stable outputs of the two rig-dependent graphs
#               (img_view_transformer, occ_encoder: the graphs after them keep theirs at a new
#               camera rig) and fixed track rows (the compiled tracking traced once); ARGS
#               after ROUNDS go to benchmark.py. Compare ab_summary's all_fps and the first
#               round's all-frame FPS (compiles). Run in the fourth session of 2026-12-03:
#               `LONG_SEQS=1 ... go` (also the 4 x 100-frame set vseq), `stable st1 2` on
#               vlong, `VAL=/tmp/lc/data/vseq ... stable sq1 1` (stable_rows_h200_2026-12-03/)
#   trackgraph TAG [ROUNDS] [ARGS...]  A: ab's B with fixed track rows in every run; B: + the
#               memory bank and query interaction (compiled) replayed as CUDA graphs too: the
#               whole frame in graphs but the host's glue. Not run yet (its GPU test failed in
#               the fourth session: query_interaction never replayed, its fresh queries being a
#               parameter; fixed since)
#   carry TAG [ROUNDS] [ARGS...]  A: the fast path as FastInferenceHook now defaults to (ab's B,
#               stable outputs of the two rig-dependent graphs) with fixed track rows; B: the
#               tracking as two graphs, track_carry (the memory bank, the query interaction,
#               the glue between them and the ego alignment) and track_settle (the tracker's
#               update and the merge; the merge's own graph off in B). Run in the fifth
#               session (carry ca1 1): B wrong on the GPU (tracks lost), see
#               rekey_h200_2026-12-03/; right in the sixth (ca2, cb1: B = A, see
#               fp32_queries_h200_2026-12-03/), after the capturing call's fix
#   rekey TAG [ROUNDS] [ARGS...]  A: the hook's default fast path (ab's B with stable outputs of
#               the two rig-dependent graphs); B: + --ab-graph-rekey-warmup 0 (a graph that
#               captured before captures a new rig at its first frame, no eager warm-up
#               calls). Compare ab_summary's all_fps. Run in the fifth session (rk1, rk2,
#               rq1: rekey_h200_2026-12-03/); the hook's default since
#   queries TAG [ROUNDS] [ARGS...]  A: the hook's default fast path (stable outputs of the
#               two rig-dependent graphs, a new rig captured at its first frame); B: + the
#               head's decoder queries in float32 (--ab-float32-queries; the head captures
#               again at each switch): what float32 queries cost, in one process. Written in
#               the sixth session (its runs set them for the whole process), not run yet
#   keep TAG [ROUNDS] [ARGS...]  A: the hook's default fast path (as in queries); B: + the
#               captures without torch.cuda.graph's synchronisation and cache flush
#               (--ab-graph-keep-memory): what a new camera rig's captures cost with and
#               without them (compare all_fps; 12 x 20 frames: a new rig every 20).
#               Written in the sixth session, not run yet
#   rigs TAG [ROUNDS] [ARGS...]  A: the hook's default fast path (as in queries); B: + the
#               camera rig's bev_pool ranks and query plan as graph inputs at fixed addresses
#               (--ab-fixed-rig-inputs): one graph of the view transformer and of the
#               occupancy encoder for every rig, no capture at a new rig (compare all_fps and
#               the rig-dependent graphs' captures, and ab_summary's sequence_start_ms).
#               Run once in the seventh session after `ITERS=300 FOLLOW=420 ... go` (the
#               device time left after a lost machine): `rigs r1 1 --cfg-options
#               model.pts_bbox_head.float32_queries=True`; B's first capture failed (fixed
#               since, see rig_inputs_h200_2026-12-04/). In the eighth, after
#               `LONG_SEQS=1 ITERS=900 FOLLOW=520 ... go` and `wait 340`: `rigs r2 1` (same
#               options) on vlong and with VAL=/tmp/lc/data/vseq (rq2): B every frame steady,
#               guard held on both; the hook's default since
#   tracks TAG [ROUNDS] [ARGS...]  A: the hook's default fast path since the eighth session
#               (rigs' B: stable outputs, a new rig captured at its first frame, fixed rig
#               inputs); B: + the tracks at fixed rows and the tracking as two graphs
#               (track_carry, track_settle; the merge's own graph off): the whole frame in
#               graphs but the host's glue (32 ops a frame outside the graphs instead of ~196,
#               counted on the CPU). Whether that is worth the fixed rows' default on a host
#               that bounds the frame (eighth session: `other` 3.1-3.5 ms, tracking 1.2 ms).
#               Checked on the CPU (emulated graphs:
#               tests/tools/test_benchmark_held_out.py::test_emulated_graphs_check_an_ab_switch_on_the_cpu).
#               Ninth session (t1/t2 on vlong, tq1/tq2 on vseq): B 106-109 FPS over all
#               frames, A 114-116 once compiled; B slower steady (its settle graph 0.85 ms
#               against A's eager settle + merge graph), so not made the default
#   masks TAG [ROUNDS] [ARGS...]  A: the hook's default fast path; B: + the head's mask
#               logits in float32 (--ab-float32-masks, TrackOccHead.float32_masks): for the
#               100-frame guard, whose fast-path misses the ninth session traced to voxels
#               (births and live tracks equal fp32 eager's frame by frame); the JSON's
#               `agreement` counts the voxels that differ from fp32 eager's. Written in the ninth
#               session; run in the tenth (mq1-mq3 on vseq, ml1 on vlong: masks_h200_2026-12-04/):
#               B's voxels differ from fp32 eager's as much as A's, so float32 masks stay opt-in
#   stream TAG [K=V...]  issue 16 item 5 on nvidia-h200-x2 (after go or carried there): the
#               test loop over the held-out set (VAL, default vlong: 12 x 20 frames, 6
#               sequences and 120 frames a rank) on one GPU, then sharded over two
#               (tools/dist_test.sh), on the run's last checkpoint, with FAST (default
#               `--fast --amp --autocast-weights --query-budget 400`; FAST=" " for eager)
#               and the K=V config options; StreamThroughputHook's frames/s of both (3 warm-up
#               iterations a rank), their ratio (goal >= 1.8) and whether the per-sequence
#               CSVs agree. Written in the eighth session, not run yet (x2 never lent).
#               GPUS=1: the one-GPU run only (on nvidia-h200: is the test loop bound by the
#               model, the data loader or the metric? the tenth session's CPU estimate: ~90
#               ms to load a 960 x 640 frame per worker, 2-3 ms of OccSTQ per frame). Run in
#               the eleventh (scan_stream_h200_2026-12-04/): 28-30 frames/s fast, 20 eager,
#               host-bound. The old test-loop host work for an A/B in one session:
#               `GPUS=1 ... stream old test_evaluator.overlap_copies=False
#               model.data_preprocessor.move_test_samples=True`. Run in the twelfth
#               (pinned_batch_h200_2026-12-04/): 24-26 against 22; then with the DataLoader's
#               pinned batches 41-43 against 31-32 (`stream nopin test_dataloader.pin_memory=
#               False`). A failed run now prints its log's tail (one of three pinned runs
#               exited with rc 1 there, its log deleted; repeat them)
#   scan TAG [ARGS...]  tools/analysis_tools/precision_scan.py on the run's last checkpoint
#               over VAL (default vlong), --tf32 and ARGS (e.g. --cfg-options
#               model.pts_bbox_head.float32_queries=True, --max-seqs, --score): eager
#               streams, fp32 against bf16 in one stage module at a time (only:M) and in all
#               but one (except:M), voxel by voxel: which part of the bf16 path moves the
#               predictions away from fp32's (the 100-frame guard). Written in the tenth
#               session (after masks: float32 mask logits did not move them); ~15 streams
#               of VAL, ~3.7 min on vlong. Run in the eleventh (scan_stream_h200_2026-12-04/):
#               no one module to keep in float32, the difference spread over the 3D encoders
#   bench TAG ARGS...  merge_bench's (one plain benchmark.py process)
set -uo pipefail
here=docs/benchmark_runs
phase=${1:?PHASE: go, carried, wait, bench, stream, scan, or an A/B phase (ab, stable, ..., rigs, tracks)}
shift
case $phase in
  go)
    EXTRA_TESTS="tests/utils/test_ab_variant.py tests/tools/test_benchmark_held_out.py
      tests/engine/test_fast_inference_hook.py tests/ops/test_ops_cuda.py
      tests/ops/test_model_cuda_e2e.py tests/models/test_trackocc_head.py
      tests/evaluation/test_occstq_metric.py tests/models/test_data_preprocessor.py" \
      exec bash $here/merge_graph_h200_2026-12-03/gpu_session.sh go ;;
  wait|bench) exec bash $here/merge_bench_h200_2026-12-03/gpu_session.sh $phase "$@" ;;
  carried)
    name=${1:?NAME: the checkpoint file staged with restage.sh}; want=${name##*-}; want=${want%.pth}
    . /tmp/gpu_env; . $here/gpu_tree_setup.sh  # W, R, S, t_start, held_out_set
    ckpt=/tmp/x/extra/$name
    sha256sum $ckpt | grep -q "^$want" || { echo "no $ckpt with sha256 $want..."; exit 1; }
    mkdir -p $S/carried && mv $ckpt $S/carried/iter_900.pth
    rm -rf $W && mkdir -p $W /tmp/lc && tar --exclude=./.gpuwheels --exclude=./.venv \
      --exclude=./.git --exclude=./work_dirs -cf - . | tar -C $W -xf - && cd $W || exit 1
    held_out_set vlong 12 20 3 6
    [ "${LONG_SEQS:-0}" = 1 ] && held_out_set vseq 4 100 4 6
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace \
      > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
    echo "ext built at $(( $(date +%s) - t_start )) s"
    timeout ${TESTS_S:-400} python -u -m pytest -m gpu tests/models/test_query_budget.py \
      tests/ops/test_panoptic_merge_stats.py tests/utils/test_cuda_graph.py \
      tests/utils/test_recorded_graph.py tests/models/test_merge_logits_dtype.py \
      tests/models/test_sync_free_inference.py tests/models/test_panoptic_merge.py \
      tests/tools/test_benchmark_fast_path_options.py tests/utils/test_ab_variant.py \
      tests/tools/test_benchmark_held_out.py tests/engine/test_fast_inference_hook.py \
      tests/ops/test_ops_cuda.py tests/ops/test_model_cuda_e2e.py tests/models/test_trackocc_head.py \
      tests/evaluation/test_occstq_metric.py tests/models/test_data_preprocessor.py \
      tests/models/test_clip_feature_batch.py tests/models/test_frame_grouped_norm.py \
      tests/utils/test_sync_batch_norm.py -q -rs -p no:cacheprovider > $OUT/gpu_tests.log 2>&1
    echo "gpu tests rc $? at $(( $(date +%s) - t_start )) s"; tail -6 $OUT/gpu_tests.log
    for set in vlong $([ "${LONG_SEQS:-0}" = 1 ] && echo vseq); do
      while ! grep -q "data rc" /tmp/lc/$set.log 2> /dev/null; do sleep 5; done
      tail -2 /tmp/lc/$set.log
    done
    echo "ready at $(( $(date +%s) - t_start )) s"; exit 0 ;;
  stream)
    tag=${1:?TAG}; shift
    . /tmp/gpu_env; cd ${W:-/tmp/w} || exit 3
    t_start=$(date +%s); S=${S:-/tmp/lc/sweep}; val=${VAL:-/tmp/lc/data/vlong}; B=/tmp/bench; mkdir -p $B
    ckpt=$(ls $S/*/iter_*.pth $S/carried/iter_900.pth 2> /dev/null | sort -V | tail -1)
    [ -n "$ckpt" ] || { echo "no checkpoint under $S"; exit 1; }
    M=${M:-configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py}
    fast=(${FAST:---fast --amp --autocast-weights --query-budget 400})
    for gpus in ${GPUS:-1 2}; do
      opts=(--cfg-options test_dataloader.dataset.data_root=$val/
            test_dataloader.num_workers=8 default_hooks.stream_throughput.warmup_iters=3
            default_hooks.stream_throughput.out_file=$OUT/stream${gpus}_$tag.json "$@")
      args=($M $ckpt --work-dir $B/stream${gpus}_$tag --csv $OUT/seqs${gpus}_$tag.csv
            "${fast[@]}" "${opts[@]}")
      if [ $gpus = 1 ]; then python tools/test.py "${args[@]}" > $OUT/stream1_$tag.log 2>&1
      else PORT=29512 bash tools/dist_test.sh $M $ckpt 2 "${args[@]:2}" \
        > $OUT/stream2_$tag.log 2>&1; fi
      rc=$?; echo "$gpus GPU(s) rc $rc at $(( $(date +%s) - t_start )) s"
      [ $rc = 0 ] || { grep -v "^ *-" $OUT/stream${gpus}_$tag.log | tail -25; \
        cp $OUT/stream${gpus}_$tag.log /tmp/failed_stream${gpus}_$tag.log; }
      grep "StreamThroughputHook:" $OUT/stream${gpus}_$tag.log | tail -1
    done
    [ "${GPUS:-1 2}" = "1 2" ] || exit 0  # one GPU only: the test loop's own rate
    python - $OUT/stream1_$tag.json $OUT/stream2_$tag.json <<'PY'
import json, sys
one, two = (json.load(open(f)) for f in sys.argv[1:])
print(f"speed-up {two['fps'] / one['fps']:.3f}x "
      f"({two['fps']:.2f} / {one['fps']:.2f} frames/s)")
PY
    sort $OUT/seqs1_$tag.csv | cmp -s - <(sort $OUT/seqs2_$tag.csv) \
      && echo "per-sequence CSVs agree" || echo "per-sequence CSVs DIFFER"
    exit 0 ;;
  scan)
    tag=${1:?TAG}; shift
    . /tmp/gpu_env; cd ${W:-/tmp/w} || exit 3
    t_start=$(date +%s); S=${S:-/tmp/lc/sweep}; val=${VAL:-/tmp/lc/data/vlong}
    ckpt=$(ls $S/*/iter_*.pth $S/carried/iter_900.pth 2> /dev/null | sort -V | tail -1)
    [ -n "$ckpt" ] || { echo "no checkpoint under $S"; exit 1; }
    M=${M:-configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py}
    python tools/analysis_tools/precision_scan.py $M $ckpt --data-root $val --tf32 \
      --json $OUT/scan_$tag.json "$@" > $OUT/scan_$tag.log 2>&1
    echo "scan $tag rc $? at $(( $(date +%s) - t_start )) s"; tail -30 $OUT/scan_$tag.log
    exit 0 ;;
  ab|stable|trackgraph|carry|rekey|queries|keep|rigs|tracks|masks) ;;
  *) echo "unknown phase $phase"; exit 2 ;;
esac
tag=${1:?TAG}; rounds=${2:-2}; shift; shift || true
C="occ_encoder.upsampler occ_encoder.fuse_conv occ_encoder.layers.0 volume_encoder_backbone"
C="$C volume_encoder_neck img_backbone img_neck img_view_transformer.depth_net"
C="$C pts_bbox_head.sem_head"
G="img_backbone img_neck img_view_transformer volume_encoder_backbone volume_encoder_neck"
G="$G occ_encoder pts_bbox_head"
if [ $phase = ab ]; then
  variant="--ab-graph-modules panoptic_merge --ab-compile-modules query_interaction memory_bank"
else
  C="$C query_interaction memory_bank"; G="$G panoptic_merge"
  variant="--ab-stable-outputs img_view_transformer occ_encoder --ab-fixed-track-rows"
  [ $phase = trackgraph ] && \
    variant="--fixed-track-rows --ab-graph-modules memory_bank query_interaction"
  [ $phase = carry ] && variant="--fixed-track-rows --graph-stable-outputs img_view_transformer
    occ_encoder --ab-graph-modules track_carry track_settle --ab-ungraph-modules panoptic_merge"
  [ $phase = rekey ] && variant="--graph-stable-outputs img_view_transformer occ_encoder
    --ab-graph-rekey-warmup 0"
  [ $phase = queries ] && variant="--graph-stable-outputs img_view_transformer occ_encoder
    --graph-rekey-warmup 0 --ab-float32-queries"
  [ $phase = keep ] && variant="--graph-stable-outputs img_view_transformer occ_encoder
    --graph-rekey-warmup 0 --ab-graph-keep-memory"
  [ $phase = rigs ] && variant="--graph-stable-outputs img_view_transformer occ_encoder
    --graph-rekey-warmup 0 --ab-fixed-rig-inputs"
  [ $phase = masks ] && variant="--graph-stable-outputs img_view_transformer occ_encoder
    --graph-rekey-warmup 0 --fixed-rig-inputs --ab-float32-masks"
  [ $phase = tracks ] && variant="--graph-stable-outputs img_view_transformer occ_encoder
    --graph-rekey-warmup 0 --fixed-rig-inputs --ab-fixed-track-rows --ab-graph-modules
    track_carry track_settle --ab-ungraph-modules panoptic_merge"
fi
exec bash $here/merge_bench_h200_2026-12-03/gpu_session.sh bench "$tag" \
  --graph-compile-modules $C --tf32-matmul --graph-modules $G $variant \
  --ab-rounds "$rounds" "$@"
