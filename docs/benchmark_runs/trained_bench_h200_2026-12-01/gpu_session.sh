#!/usr/bin/env bash
# Phases on the GPU machine after `long_run_h200_2026-12-01/gpu_session.sh go ITERS ITERS` has
# trained the learning-check model (docs/benchmark.md, "A trained checkpoint, timed"). Code runs
# from /tmp/w; results come back as $OUT/bench.tar.gz and the learning check's results.tar.gz.
#   finish        follow the run to its end and its last checkpoint's held-out evaluation
#   ab            issue 14: the same checkpoint with RuntimeTracker(birth_needs_output=True)
#   fast          issue 16: fp32 eager vs the fast path (graph-bf16, head graph, held weights,
#                 folded BN) on the held-out sequences, with profiles; CUDA memory traffic
#   compiled NAME MODULE...   the fast path with MODULEs torch.compile d inside the graphs
#   bring-ckpt K  the trained checkpoint's weights in fp16 (publish_model.py), split in 15 MiB
#                 chunks; call K (0, 1, ...) puts chunks 4K..4K+3 in $OUT (64 MiB a call); here:
#                 cat chunk.* > FILE and check the hash in its name (sha256sum) before use
#   stage-ckpt    (a call of its own, carrying work_dirs/trained/carry_K) keep that part of a
#                 checkpoint brought back by bring-ckpt in /tmp/ckpt_stage; locally first:
#                 split -b 40M -d -a 2 FILE.pth and one chunk per work_dirs/trained/carry_K/
#   fresh-ckpt NAME  (a fresh machine after part1, part2, stage-mmcv and stage-ckpt calls,
#                 carrying .gpuwheels/part3) install, CUDA extension, the held-out sequences
#                 only, and the staged chunks joined into the run folder as iter_900.pth (the
#                 sha256 prefix in NAME checked), so that ab / fast / compiled run on it without
#                 training
#   bench TAG ARGS...  one benchmark.py process as `compiled` but with any extra arguments
#                 (e.g. --graph-compile-modules ... --cfg-options ...); VAL=DIR picks the
#                 held-out data (default $R/val)
#   val-long NAME SEQS FRAMES SEED  more held-out sequences in $R/NAME (other seed)
#   ops TAG       the GPU tests of tests/ops and tests/models (-m gpu) and
#                 benchmark_ops.py --ops mmcv merge with kernel profiles
#   fresh         (a fresh machine, carrying .gpuwheels/part3 after part1, part2 and
#                 long_run_h200_2026-12-01/gpu_session.sh stage-mmcv) install, CUDA extension,
#                 then the paper config with random weights (one camera rig, 64 live tracks):
#                 fp32 vs graph-bf16 with the compiled modules, without and with --tf32-matmul
set -uo pipefail
phase=$1; shift
W=/tmp/w; R=/tmp/lc/data; S=/tmp/lc/sweep; B=/tmp/bench
M=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py
PAPER=configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py
G="img_backbone img_neck img_view_transformer volume_encoder_backbone volume_encoder_neck occ_encoder pts_bbox_head"
LC="bash tools/analysis_tools/learning_check.sh"
t_start=$(date +%s)
if [ "$phase" = fresh ]; then
  mkdir -p .gpuwheels/mmcv && cp /tmp/mmcv_stage/*.whl .gpuwheels/mmcv/
  bash .gpuwheels/part3/gpu_env.sh install > $OUT/install.log 2>&1 || { tail -30 $OUT/install.log; exit 1; }
  . /tmp/gpu_env
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
  echo "ext built at $(( $(date +%s) - t_start )) s"
  C="occ_encoder.upsampler occ_encoder.fuse_conv occ_encoder.layers.0.self_attn occ_encoder.layers.0.ffn volume_encoder_backbone volume_encoder_neck img_backbone img_neck img_view_transformer.depth_net pts_bbox_head.sem_head"
  for tag in nocross nocross_tf32; do
    extra=(); [ $tag = nocross_tf32 ] && extra=(--tf32-matmul)
    python tools/analysis_tools/benchmark.py $PAPER --fuse-conv-bn --mode fp32 graph-bf16 \
      --frames 60 --warmup 10 --max-live-tracks 64 --query-budget 264 --autocast-weights \
      --graph-modules $G --graph-compile-modules $C --keep-going "${extra[@]}" \
      --json $OUT/random_$tag.json > $OUT/random_$tag.log 2>&1
    echo "$tag rc $? at $(( $(date +%s) - t_start )) s"; grep '^\[benchmark\]' $OUT/random_$tag.log | cut -c1-400
  done
  exit 0
fi
if [ "$phase" = stage-ckpt ]; then
  mkdir -p /tmp/ckpt_stage && cp work_dirs/trained/carry_*/chunk.* /tmp/ckpt_stage/ && ls -la /tmp/ckpt_stage
  exit 0
fi
if [ "$phase" = fresh-ckpt ]; then
  name=${1:?NAME: the file name bring-ckpt gave, e.g. learning_check_iter_900-6cecab46.pth}
  mkdir -p .gpuwheels/mmcv && cp /tmp/mmcv_stage/*.whl .gpuwheels/mmcv/
  bash .gpuwheels/part3/gpu_env.sh install > $OUT/install.log 2>&1 || { tail -30 $OUT/install.log; exit 1; }
  . /tmp/gpu_env
  rm -rf $W && mkdir -p $W && tar --exclude=./.gpuwheels --exclude=./.git --exclude=./work_dirs -cf - . | tar -C $W -xf - && cd $W
  (python tools/create_data.py synthetic --out-dir $R/val --train-seqs 0 --val-seqs 6 \
     --frames-per-seq 10 --seed 2 --image-size 960 640 --workers 14 --no-progress --overwrite \
     > /tmp/val_data.log 2>&1; echo "data rc $?" >> /tmp/val_data.log) &
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
  wait; tail -2 /tmp/val_data.log; grep -q "data rc 0" /tmp/val_data.log || exit 1
  mkdir -p $S/carried && cat /tmp/ckpt_stage/chunk.* > $S/carried/iter_900.pth
  want=${name##*-}; want=${want%.pth}
  sha256sum $S/carried/iter_900.pth | grep -q "^$want" || { echo "checkpoint hash is not $want"; exit 1; }
  echo "ready at $(( $(date +%s) - t_start )) s: $S/carried/iter_900.pth ($want), $R/val"
  exit 0
fi
[ -f /tmp/gpu_env ] || { echo "no /tmp/gpu_env: machine is fresh"; exit 3; }
. /tmp/gpu_env; cd $W; mkdir -p $B
work=$(ls -d $S/*/ | head -1); work=${work%/}
iters=$(ls $work/iter_*.pth 2>/dev/null | sed 's/.*iter_\([0-9]*\)\.pth/\1/' | sort -n | tail -1)
ckpt=$work/iter_$iters.pth
pack() {
  SAFE_NAMES=1 $LC pack $S $OUT/results.tar.gz
  tar -C $B -czf $OUT/bench.tar.gz . && ls -la $OUT
}
bench() {  # TAG EXTRA...: one benchmark.py process, fp32 eager first (the guard's reference)
  local tag=$1; shift
  timeout $(( 590 - ($(date +%s) - t_start) )) python tools/analysis_tools/benchmark.py $M $ckpt \
    --data-root ${VAL:-$R/val}/ --fuse-conv-bn --mode fp32 graph-bf16 --warmup 5 --keep-going \
    --graph-modules $G --query-budget 400 --autocast-weights --json $B/bench_$tag.json "$@" \
    > $B/bench_$tag.log 2>&1
  echo "bench $tag rc $? at $(( $(date +%s) - t_start )) s"; grep '^\[benchmark\]' $B/bench_$tag.log | cut -c1-600
}
case $phase in
  bring-ckpt)
    k=${1:?K}; C=/tmp/ckpt
    if [ ! -d $C ]; then
      mkdir -p $C && python tools/model_converters/publish_model.py $ckpt $C/learning_check_iter_$iters.pth \
        --dtype fp16 && (cd $C && split -b 15M -d -a 2 learning_check_iter_*.pth chunk.) && ls -la $C
    fi
    ls $C/chunk.* | sed -n "$(( 4 * k + 1 )),$(( 4 * k + 4 ))p" | xargs -r -I{} cp {} $OUT/
    (cd $C && sha256sum learning_check_iter_*.pth); ls -la $OUT
    ;;
  finish)
    $LC wait $work 500 | tail -8
    while ! grep -q "all checkpoints evaluated" $work/watch.log 2>/dev/null; do
      [ $(( $(date +%s) - t_start )) -lt 560 ] || { echo "watch not done"; break; }; sleep 5; done
    tail -4 $work/watch.log; pack
    ;;
  ab)
    CONFIG=$M EVAL_TAG=birth TEST_OPTS=model.tracker.birth_needs_output=True UNTRAINED=0 \
      TEST_WORKERS=8 $LC eval $R $work $iters > $B/eval_birth.log 2>&1; echo "ab rc $?"
    python - $work $iters <<'PY'
import json, sys
w, it = sys.argv[1], sys.argv[2]
for tag, path in (('plain', f'{w}/curve/iter_{it}/occstq.json'),
                  ('birth_needs_output', f'{w}/eval_iter_{it}_birth/occstq.json')):
    try:
        d = json.load(open(path))
    except OSError as e:
        print(tag, e); continue
    print(tag, {k: d[k] for k in ('OccSTQ', 'AQ', 'mIoU') if k in d})
PY
    pack
    ;;
  fast)
    bench fast --profile $B/prof_
    timeout $(( 590 - ($(date +%s) - t_start) )) python tools/analysis_tools/memory_traffic.py \
      $PAPER --device cuda --mode bf16 --fuse-conv-bn --autocast-weights --query-budget 264 \
      --lines --top 45 --json $B/memory_traffic_cuda.json > $B/memory_traffic_cuda.txt 2>&1
    echo "memory traffic rc $?"; head -40 $B/memory_traffic_cuda.txt
    pack
    ;;
  compiled)
    tag=${1:?NAME}; shift
    bench compiled_$tag --graph-compile-modules "$@"
    pack
    ;;
  bench)
    tag=${1:?TAG}; shift
    bench $tag "$@"
    tar -C $B -czf $OUT/bench.tar.gz . && ls -la $OUT
    ;;
  val-long)
    name=${1:?NAME}; seqs=${2:?SEQS}; frames=${3:?FRAMES}; seed=${4:?SEED}
    python tools/create_data.py synthetic --out-dir $R/$name --train-seqs 0 --val-seqs $seqs \
      --frames-per-seq $frames --seed $seed --image-size 960 640 --workers 14 --no-progress \
      --overwrite > $OUT/val_$name.log 2>&1; echo "val $name rc $? at $(( $(date +%s) - t_start )) s"
    tail -3 $OUT/val_$name.log
    ;;
  ops)
    tag=${1:?TAG}
    timeout 300 python -m pytest -m gpu tests/ops tests/models -q -rs -p no:cacheprovider \
      > $OUT/tests_$tag.log 2>&1; echo "gpu tests rc $? at $(( $(date +%s) - t_start )) s"
    tail -4 $OUT/tests_$tag.log
    python tools/analysis_tools/benchmark_ops.py --ops mmcv merge --iters 50 --warmup 10 \
      --profile /tmp/prof_$tag/ --out $OUT/ops_$tag.md 2>&1 | grep -v '^|' | tail -12
    tar -C /tmp -czf $OUT/prof_$tag.tar.gz prof_$tag; cat $OUT/ops_$tag.md
    echo "ops done at $(( $(date +%s) - t_start )) s"
    ;;
esac
