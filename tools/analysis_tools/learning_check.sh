#!/usr/bin/env bash
# Learning check of a TrackOcc config on synthetic sequences (docs/benchmark.md, "Learning check").
#
#   learning_check.sh data  ROOT              train set (seed TRAIN_SEED, 1) and held-out val
#                                             set (seed VAL_SEED, 2)
#   learning_check.sh train ROOT WORK ITERS   train in the background on GPUS devices; with
#                                             PREEMPT=1 it is stopped once the mid-run
#                                             checkpoint exists and resumed from it
#   learning_check.sh wait  WORK [SECONDS]    follow the training log until it ends (or SECONDS)
#   learning_check.sh eval  ROOT WORK ITERS   held-out predictions of iter_ITERS.pth, their
#                                             OccSTQ / AQ / mIoU, track diagnostics and merge
#                                             audit (in WORK/eval_iter_ITERS[_EVAL_TAG]/), and
#                                             the untrained model's OccSTQ (UNTRAINED=0:
#                                             skipped); EVAL_TAG + TEST_OPTS: a test-time
#                                             variant of the same checkpoint beside the first
#   learning_check.sh curve ROOT WORK         the same for every saved checkpoint of WORK (in
#                                             WORK/curve/iter_N/, done ones kept), then
#                                             WORK/curve.csv: iteration, OccSTQ, AQ, mIoU, loss
#   learning_check.sh watch ROOT WORK         in the background: `curve` each time a new
#                                             checkpoint appears, until the training has ended
#                                             (WORK/DONE) and the last one is evaluated; log in
#                                             WORK/watch.log (e.g. CUDA_VISIBLE_DEVICES=0 while
#                                             training runs on all GPUs)
#   learning_check.sh ablate ROOT OUTDIR ITERS CONFIG[=GPU] [+KEY=VALUE ...] ...
#                                             side by side: per CONFIG one single-GPU `train`
#                                             (PREEMPT 0 unless set) in OUTDIR/<run> on
#                                             GPU (default: round-robin over ABLATE_GPUS, else
#                                             over the GPUs of `nvidia-smi -L`) and its `watch`
#                                             (on WATCH_GPU, default the run's GPU); the same
#                                             data, seeds and schedule, only the config
#                                             differs, and the +KEY=VALUE --cfg-options that
#                                             follow it (training and testing of that run:
#                                             <run> = <config stem>+<last key part>=VALUE...,
#                                             a path VALUE by its file name);
#                                             runs listed in OUTDIR/ablate.tsv
#   learning_check.sh compare OUTDIR|WORK... [--all]
#                                             the runs side by side at the latest checkpoint
#                                             evaluated in all of them (--all: at each):
#                                             OccSTQ / AQ / mIoU, per thing class IoU / AQ and
#                                             merge-audit fates; OUTDIR/compare.csv and .json
#                                             (tools/analysis_tools/compare_runs.py)
#   learning_check.sh pack  OUTDIR|WORK TARBALL
#                                             the results of a run or an ablation without
#                                             checkpoints and predictions (curves, OccSTQ,
#                                             diagnostics, merge audits, CSV, logs) in one
#                                             .tar.gz, to bring them off the training machine;
#                                             SAFE_NAMES=1: '+' and '=' of run names as '_'
#
# Environment: CONFIG (default the paper architecture on synthetic data), GPUS (1; more: train
# with tools/dist_train.sh and test with tools/dist_test.sh, same options), PORT (29500),
# TRAIN_SEQS (40), VAL_SEQS (6), TRAIN_SEED (1), VAL_SEED (2: other seeds give other held-out
# sequences), FRAMES (10), IMAGE_SIZE ("960 640"), WORKERS (data generation
# processes, 16), BATCH (training clips per GPU and iteration; default the config's, 1: a
# batch-1 run leaves an H200 half idle), LOADER_WORKERS (12), TEST_WORKERS (8), AMP_DTYPE
# (bfloat16; empty: the config's own), CKPT_EVERY (checkpoint interval, ITERS/2; `curve`
# evaluates each), FIT_SEQS (0; N: `eval` / `curve` also score the first N training sequences,
# in <eval dir>/fit/: fit against generalisation), KEEP_CKPTS (-1: all), PREEMPT (1), STRICT (1: OccSTQ's strict settings in eval / curve), UNTRAINED (1),
# PYTHON (python), EXTRA_OPTS / TEST_OPTS (more --cfg-options for training / testing),
# DRY_RUN (1: print the commands instead of running them); STOP_AT (N: `train` ends after
# iter_N.pth, the first N iterations of the ITERS schedule: a first stage), AFTER (a path:
# `train` starts once it exists, e.g. the first stage's WORK/DONE); for `ablate`: ABLATE_GPUS
# (GPU ids, e.g. "0 1"), WATCH_GPU, WATCH (0: no watch).
set -euo pipefail
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")  # still right after the cd below
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
CONFIG=${CONFIG:-configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py}
GPUS=${GPUS:-1}
PORT=${PORT:-29500}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
# tools/dist_*.sh call `python`: make it the one of PYTHON
if [[ $PY == */* ]]; then export PATH="$(cd "$(dirname "$PY")" && pwd):$PATH"; fi

die() { echo "learning_check: $*" >&2; exit 2; }
[[ ${FIT_SEQS:-0} =~ ^(0|[1-9][0-9]*)$ ]] || die "FIT_SEQS must be a number of sequences, got '$FIT_SEQS'"
run() {  # run a command, or print it with DRY_RUN=1
  if [ -n "${DRY_RUN:-}" ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || die "GPUS must be a positive integer, got '$GPUS'"
[ -z "${BATCH:-}" ] || [[ $BATCH =~ ^[1-9][0-9]*$ ]] \
  || die "BATCH must be a positive integer, got '$BATCH'"

ckpt_every() {  # ITERS -> checkpoint interval
  local every=${CKPT_EVERY:-$(( $1 / 2 ))}
  [[ $every =~ ^[1-9][0-9]*$ ]] || die "CKPT_EVERY must be a positive integer, got '$every'"
  echo "$every"
}

train_opts() {  # ROOT ITERS -> --cfg-options of the training run
  local root=$1 iters=$2 every
  every=$(ckpt_every "$iters")
  local warm=$(( iters / 10 < 200 ? (iters < 20 ? 1 : iters / 10) : 200 )) amp=${AMP_DTYPE-bfloat16}
  echo "train_dataloader.dataset.data_root=$root/train/" \
       "train_dataloader.num_workers=${LOADER_WORKERS:-12}" \
       ${BATCH:+train_dataloader.batch_size=$BATCH} \
       "val_dataloader.dataset.data_root=$root/val/" \
       "test_dataloader.dataset.data_root=$root/val/" \
       ${amp:+optim_wrapper.dtype=$amp} \
       "train_cfg.max_iters=$iters train_cfg.val_interval=$(( iters * 10 ))" \
       "param_scheduler.0.end=$warm" \
       "param_scheduler.1.end=$iters param_scheduler.1.T_max=$iters" \
       "default_hooks.checkpoint.interval=$every" \
       "default_hooks.checkpoint.max_keep_ckpts=${KEEP_CKPTS:--1}" \
       "default_hooks.logger.interval=10" \
       "randomness.seed=0" \
       ${EXTRA_OPTS:-}
}

train_argv() {  # PORT_OFFSET ROOT WORK ITERS [--resume] -> ARGV: the training command
  local port=$(( PORT + $1 )) root=$2 work=$3 iters=$4 opts; shift 4
  read -r -a opts <<<"$(train_opts "$root" "$iters")"
  if [ "$GPUS" -gt 1 ]; then
    ARGV=(env "PORT=$port" bash tools/dist_train.sh "$CONFIG" "$GPUS" --work-dir "$work" "$@"
          --cfg-options "${opts[@]}")
  else
    ARGV=("$PY" tools/train.py "$CONFIG" --work-dir "$work" "$@" --cfg-options "${opts[@]}")
  fi
}

stop_iter() {  # ITERS -> the checkpoint after which part 1 is stopped (0: never)
  local iters=$1 every
  every=$(ckpt_every "$iters")
  if [ -n "${STOP_AT:-}" ]; then  # the run ends there: the first STOP_AT iterations of ITERS
    [[ $STOP_AT =~ ^[1-9][0-9]*$ ]] && [ "$STOP_AT" -lt "$iters" ] \
      && [ $(( STOP_AT % every )) = 0 ] \
      || die "STOP_AT must be a checkpoint iteration (a multiple of $every) below $iters," \
             "got '$STOP_AT'"
    echo "$STOP_AT"; return
  fi
  local stop=$(( ( (iters / 2 + every - 1) / every ) * every ))
  if [ "${PREEMPT:-1}" = 1 ] && [ "$stop" -gt 0 ] && [ "$stop" -lt "$iters" ]; then
    echo "$stop"
  else
    echo 0
  fi
}

drive() {  # ROOT WORK ITERS: the background training driver started by `train`
  local root=$1 work=$2 iters=$3 stop pid rc
  stop=$(stop_iter "$iters")
  if [ -n "${AFTER:-}" ]; then  # e.g. the DONE of the stage this run starts from
    echo "waiting for $AFTER since $(date +%T)"
    while [ ! -e "$AFTER" ]; do sleep 5; done
    echo "$AFTER exists at $(date +%T): starting"
  fi
  # its own session, so that a stop reaches torchrun, its workers and the data loaders
  train_argv 0 "$root" "$work" "$iters"
  setsid "${ARGV[@]}" > "$work/part1.log" 2>&1 &
  pid=$!
  if [ "$stop" -gt 0 ]; then
    while kill -0 "$pid" 2>/dev/null && [ ! -f "$work/iter_$stop.pth" ]; do sleep 2; done
  fi
  if [ "$stop" -gt 0 ] && [ -f "$work/iter_$stop.pth" ]; then
    sleep 5  # the checkpoint is renamed into place complete; let the log catch up
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "stopped after iter_$stop.pth at $(date +%T)" >> "$work/part1.log"
    rc=0
    if [ -n "${STOP_AT:-}" ]; then  # no part 2: the run ends at STOP_AT
      echo "exit 0 at $(date +%T) (STOP_AT=$STOP_AT of a $iters-iteration schedule)" \
        >> "$work/part1.log"
      touch "$work/DONE"; return
    fi
    train_argv 1 "$root" "$work" "$iters" --resume
    "${ARGV[@]}" > "$work/part2.log" 2>&1 || rc=$?
    echo "exit $rc at $(date +%T)" >> "$work/part2.log"
  else
    rc=0; wait "$pid" || rc=$?
    [ "$stop" -gt 0 ] && echo "part 1 ended before iter_$stop.pth" >> "$work/part1.log"
    echo "exit $rc at $(date +%T)" >> "$work/part1.log"
  fi
  touch "$work/DONE"
}

test_cmd() {  # CHECKPOINT ARGS... -> test the checkpoint on GPUS devices
  local ckpt=$1; shift
  if [ "$GPUS" -gt 1 ]; then
    run env PORT=$(( PORT + 2 )) bash tools/dist_test.sh "$CONFIG" "$ckpt" "$GPUS" "$@"
  else
    run "$PY" tools/test.py "$CONFIG" "$ckpt" "$@"
  fi
}

evaluate_checkpoint() {  # ROOT CHECKPOINT OUT: predictions, OccSTQ and track diagnostics
  local root=$1 ckpt=$2 out=$3 gt="$1/val/pano_voxel04" strict=()
  [ "${STRICT:-0}" = 1 ] && strict=(--strict)
  [ -n "${DRY_RUN:-}" ] || { rm -rf "$out/preds"; mkdir -p "$out"; }
  # shellcheck disable=SC2086
  test_cmd "$ckpt" --work-dir "$out/test" --format-only --out-dir "$out/preds" \
      --merge-audit "$out/merge_audit.json" \
      --cfg-options "test_dataloader.dataset.data_root=$root/val/" \
      "test_dataloader.num_workers=${TEST_WORKERS:-8}" ${TEST_OPTS:-}
  run "$PY" tools/evaluate_predictions.py --gt-root "$gt" --pred-dir "$out/preds" \
      --split validation "${strict[@]}" --json "$out/occstq.json" --csv "$out/per_sequence.csv"
  run "$PY" tools/analysis_tools/track_diagnostics.py "$out/preds" "$gt" --split validation \
      "${strict[@]}" --json "$out/diagnostics.json"
}

evaluate_fit() {  # ROOT CHECKPOINT OUT: with FIT_SEQS=N, OccSTQ on the first N *training*
  # sequences as well (OUT/fit/occstq.json): a model that also scores low on what it trained on
  # is limited by its optimisation, one that scores high there but low held out by the data
  local fit=${FIT_SEQS:-0} root=$1 ckpt=$2 out=$3/fit strict=()
  [ "$fit" -gt 0 ] || return 0
  [ "${STRICT:-0}" = 1 ] && strict=(--strict)
  [ -n "${DRY_RUN:-}" ] || { rm -rf "$out/preds"; mkdir -p "$out"; }
  # the first N sequences in stream order: the first N * FRAMES frames
  # shellcheck disable=SC2086
  test_cmd "$ckpt" --work-dir "$out/test" --format-only --out-dir "$out/preds" \
      --cfg-options "test_dataloader.dataset.data_root=$root/train/" \
      "test_dataloader.dataset.ann_file=kitti_format/waymo_infos_train_jpg.pkl" \
      "test_dataloader.dataset.data_prefix.occ=pano_voxel04/training" \
      "test_dataloader.dataset.indices=$(( fit * ${FRAMES:-10} ))" \
      "test_dataloader.num_workers=${TEST_WORKERS:-8}" ${TEST_OPTS:-}
  # --missing-pred skip: only the predicted sequences are scored
  run "$PY" tools/evaluate_predictions.py --gt-root "$root/train/pano_voxel04" \
      --pred-dir "$out/preds" --split training --missing-pred skip "${strict[@]}" \
      --json "$out/occstq.json"
}

ablate_gpus() {  # -> the GPU ids that ablate runs without =GPU take in turn
  if [ -n "${ABLATE_GPUS:-}" ]; then
    echo "$ABLATE_GPUS"
  elif command -v nvidia-smi > /dev/null; then
    nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9][0-9]*\):.*/\1/p' | tr '\n' ' '
  fi
}

tee_to() {  # FILE: copy stdin to FILE as well (not with DRY_RUN)
  if [ -n "${DRY_RUN:-}" ]; then cat; else mkdir -p "$(dirname "$1")"; tee "$1"; fi
}

summary_lines() {  # the OccSTQ lines and errors of an evaluation (all of it with DRY_RUN)
  if [ -n "${DRY_RUN:-}" ]; then cat; else grep -E "^OccSTQ|^error|Error:|Traceback" || true; fi
}

cmd=${1:-}; shift || true
case "$cmd" in
  data)
    root=${1:?ROOT}
    read -r W H <<<"${IMAGE_SIZE:-960 640}"
    run "$PY" tools/create_data.py synthetic --out-dir "$root/train" \
        --train-seqs "${TRAIN_SEQS:-40}" --val-seqs 0 --frames-per-seq "${FRAMES:-10}" \
        --seed "${TRAIN_SEED:-1}" \
        --image-size "$W" "$H" --workers "${WORKERS:-16}" --no-progress --overwrite
    run "$PY" tools/create_data.py synthetic --out-dir "$root/val" --train-seqs 0 \
        --val-seqs "${VAL_SEQS:-6}" --frames-per-seq "${FRAMES:-10}" \
        --seed "${VAL_SEED:-2}" \
        --image-size "$W" "$H" --workers "${WORKERS:-16}" --no-progress --overwrite
    # the val split of the held-out root is what the test loop reads
    run du -sh "$root/train" "$root/val"
    ;;
  train)
    root=${1:?ROOT}; work=${2:?WORK}; iters=${3:?ITERS}
    stop=$(stop_iter "$iters")
    if [ -n "${DRY_RUN:-}" ]; then
      train_argv 0 "$root" "$work" "$iters"
      [ -z "${AFTER:-}" ] || echo "once $AFTER exists:"
      echo "part 1:"; run "${ARGV[@]}"
      if [ -n "${STOP_AT:-}" ]; then
        echo "stopped after iter_$stop.pth (STOP_AT): the run ends there"
      elif [ "$stop" -gt 0 ]; then
        train_argv 1 "$root" "$work" "$iters" --resume
        echo "stopped after iter_$stop.pth; part 2:"; run "${ARGV[@]}"
      fi
      exit 0
    fi
    mkdir -p "$work"
    rm -f "$work/DONE"
    setsid bash "$SELF" _drive "$root" "$work" "$iters" > "$work/driver.log" 2>&1 < /dev/null &
    echo "training started in the background on $GPUS device(s)${AFTER:+ once $AFTER exists}:" \
         "$work/part1.log$(
           if [ -n "${STOP_AT:-}" ]; then echo ", ends after iter_$stop.pth"
           elif [ "$stop" -gt 0 ]; then echo ", stopped after iter_$stop.pth, then $work/part2.log"; fi)"
    ;;
  _drive)
    drive "$@"
    ;;
  wait)
    work=${1:?WORK}; limit=${2:-540}; t=0
    while [ ! -f "$work/DONE" ] && [ "$t" -lt "$limit" ]; do sleep 15; t=$(( t + 15 ))
      log=$(ls -t "$work"/part*.log 2>/dev/null | head -1)
      [ -n "$log" ] && grep -E "Iter\(train\)" "$log" | tail -1 | cut -c1-220 || true
    done
    [ -f "$work/DONE" ] && { echo "training finished"; tail -n 1 "$work"/part*.log; } \
      || echo "still training after ${limit}s"
    # the checkpoints evaluated so far (watch / curve): printed with every wait, so that the
    # numbers also reach a caller that loses the machine before the run ends
    if compgen -G "$work/curve/iter_*/occstq.json" > /dev/null; then
      "$PY" tools/analysis_tools/learning_curve.py "$work" --out "$work/curve.csv" 2>&1 \
        | grep -v "^written: " || echo "learning_curve.py failed on $work"
    fi
    ;;
  watch)
    root=${1:?ROOT}; work=${2:?WORK}
    [ -d "$work" ] || die "$work does not exist (start the training first)"
    if [ -n "${DRY_RUN:-}" ]; then bash "$SELF" _watch "$root" "$work"; exit 0; fi
    setsid bash "$SELF" _watch "$root" "$work" >> "$work/watch.log" 2>&1 < /dev/null &
    echo "evaluating each new checkpoint of $work in the background: $work/watch.log"
    ;;
  _watch)
    root=${1:?ROOT}; work=${2:?WORK}; evaluated=""
    while true; do
      done_before=0; [ -f "$work/DONE" ] && done_before=1
      ckpts=$(find "$work" -maxdepth 1 -type f -name 'iter_*.pth' -printf '%f\n' | sort)
      if [ -n "$ckpts" ] && [ "$ckpts" != "$evaluated" ]; then
        echo "[$(date +%T)] new checkpoint(s): $(echo $ckpts)"
        bash "$SELF" curve "$root" "$work" || echo "[$(date +%T)] curve failed (rc $?)"
        evaluated=$ckpts
      fi
      # DONE seen before this pass: every checkpoint of the run has been evaluated
      [ "$done_before" = 1 ] && break
      sleep "${WATCH_EVERY:-15}"
    done
    echo "[$(date +%T)] watch: training ended, all checkpoints evaluated"
    ;;
  eval)
    root=${1:?ROOT}; work=${2:?WORK}; iters=${3:?ITERS}
    ckpt=$work/iter_$iters.pth
    [ -n "${DRY_RUN:-}" ] || [ -f "$ckpt" ] || die "$ckpt does not exist (training not finished?)"
    tag=${EVAL_TAG:+_$EVAL_TAG}
    [[ -z ${EVAL_TAG:-} || $EVAL_TAG =~ ^[A-Za-z0-9_.-]+$ ]] \
      || die "EVAL_TAG must be letters, digits, '.', '_' or '-', got '$EVAL_TAG'"
    out=$work/eval_iter_$iters$tag
    evaluate_checkpoint "$root" "$ckpt" "$out" 2>&1 | tee_to "$work/test_trained$tag.log"
    if [ "${FIT_SEQS:-0}" -gt 0 ]; then
      evaluate_fit "$root" "$ckpt" "$out" 2>&1 | tee_to "$work/test_fit$tag.log"
    fi
    run cp "$out/per_sequence.csv" "$work/trained_per_sequence$tag.csv"
    if [ "${UNTRAINED:-1}" = 1 ]; then  # --random-init: one process (no checkpoint to share)
      run "$PY" tools/test.py "$CONFIG" --random-init --work-dir "$work/test_untrained" \
          --csv "$work/untrained_per_sequence.csv" --cfg-options \
          "test_dataloader.dataset.data_root=$root/val/" \
          "test_dataloader.num_workers=${TEST_WORKERS:-8}" randomness.seed=0 ${TEST_OPTS:-} \
          2>&1 | tee_to "$work/test_untrained.log"
    fi
    echo "results: $out/occstq.json, $out/diagnostics.json, $work/test_trained$tag.log"
    ;;
  curve)
    root=${1:?ROOT}; work=${2:?WORK}
    iters=$(find "$work" -maxdepth 1 -type f -name 'iter_*.pth' -printf '%f\n' 2>/dev/null \
            | sed -n 's/^iter_\([0-9][0-9]*\)\.pth$/\1/p' | sort -n || true)
    [ -n "$iters" ] || die "no checkpoint iter_N.pth in $work"
    for it in $iters; do
      out=$work/curve/iter_$it
      if [ -f "$out/occstq.json" ] && [ -f "$out/diagnostics.json" ] \
         && { [ "${FIT_SEQS:-0}" -eq 0 ] || [ -f "$out/fit/occstq.json" ]; }; then
        echo "iteration $it: evaluated before ($out)"; continue
      fi
      echo "iteration $it"
      evaluate_checkpoint "$root" "$work/iter_$it.pth" "$out" 2>&1 | tee_to "$out/eval.log" \
        | summary_lines
      [ -n "${DRY_RUN:-}" ] || [ -f "$out/diagnostics.json" ] \
        || die "evaluating iter_$it.pth failed: $out/eval.log"
      if [ "${FIT_SEQS:-0}" -gt 0 ]; then
        echo "iteration $it on the first $FIT_SEQS training sequences"
        evaluate_fit "$root" "$work/iter_$it.pth" "$out" 2>&1 | tee_to "$out/fit.log" \
          | summary_lines
        [ -n "${DRY_RUN:-}" ] || [ -f "$out/fit/occstq.json" ] \
          || die "evaluating iter_$it.pth on training sequences failed: $out/fit.log"
      fi
    done
    run "$PY" tools/analysis_tools/learning_curve.py "$work" --out "$work/curve.csv"
    ;;
  ablate)
    root=${1:?ROOT}; outdir=${2:?OUTDIR}; iters=${3:?ITERS}; shift 3
    [ $# -gt 0 ] || die "ablate: no CONFIG given (ablate ROOT OUTDIR ITERS CONFIG[=GPU]" \
                        "[+KEY=VALUE ...] ...)"
    [[ $iters =~ ^[1-9][0-9]*$ ]] || die "ITERS must be a positive integer, got '$iters'"
    [ "$GPUS" = 1 ] || die "ablate trains each config on one GPU; GPUS=$GPUS is not for it"
    ckpt_every "$iters" > /dev/null
    [ -n "${DRY_RUN:-}" ] || { [ -d "$root/train" ] && [ -d "$root/val" ]; } \
      || die "ablate: no $root/train and $root/val (learning_check.sh data ROOT makes them)"
    watch_gpu=${WATCH_GPU:-}
    [[ -z $watch_gpu || $watch_gpu =~ ^[0-9]+$ ]] \
      || die "WATCH_GPU must be one device index, got '$watch_gpu'"
    cfgs=(); stems=(); gpus=(); opts=(); pool=(); turn=0
    for spec in "$@"; do  # check every run before starting any
      if [[ $spec == +* ]]; then  # a --cfg-options word of the run before it
        [ ${#cfgs[@]} -gt 0 ] || die "ablate: $spec comes before any CONFIG"
        [[ $spec =~ ^\+([A-Za-z_][A-Za-z0-9_.]*)=([^[:space:]]+)$ ]] \
          || die "ablate: $spec: options are +KEY=VALUE (a --cfg-options word, no spaces)"
        last=$(( ${#cfgs[@]} - 1 ))
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}  # a path (e.g. load_from) names the run by its file name
        stems[$last]="${stems[$last]}+${key##*.}=${value##*/}"
        opts[$last]="${opts[$last]:+${opts[$last]} }${spec#+}"
        continue
      fi
      cfg=$spec; gpu=""
      if [[ $spec == *=* ]]; then
        cfg=${spec%=*}; gpu=${spec##*=}
        [[ $gpu =~ ^[0-9]+$ ]] || die "ablate: $spec: GPU must be one device index, got '$gpu'"
      fi
      [ -f "$cfg" ] || die "ablate: config $cfg not found"
      stem=$(basename "$cfg" .py)
      if [ -z "$gpu" ]; then
        if [ ${#pool[@]} -eq 0 ]; then
          read -r -a pool <<<"$(ablate_gpus)"
          [ ${#pool[@]} -gt 0 ] || die "ablate: $cfg has no =GPU and no GPU is known" \
                                       "(ABLATE_GPUS empty, nvidia-smi -L lists none)"
          for g in "${pool[@]}"; do
            [[ $g =~ ^[0-9]+$ ]] || die "ABLATE_GPUS must be device indices, got '$g'"
          done
        fi
        gpu=${pool[$(( turn % ${#pool[@]} ))]}; turn=$(( turn + 1 ))
      fi
      cfgs+=("$cfg"); stems+=("$stem"); gpus+=("$gpu"); opts+=("")
    done
    for i in "${!stems[@]}"; do
      for j in "${!stems[@]}"; do
        [ "$i" -ge "$j" ] || [ "${stems[$i]}" != "${stems[$j]}" ] \
          || die "ablate: two runs named ${stems[$i]} (the work dir of a run is" \
                 "OUTDIR/<config stem>[+<option>...])"
      done
      if compgen -G "$outdir/${stems[$i]}/iter_*.pth" > /dev/null; then
        die "ablate: $outdir/${stems[$i]} already holds checkpoints of an earlier run" \
            "(another OUTDIR, or remove them)"
      fi
    done
    if [ -z "${DRY_RUN:-}" ]; then  # the runs, for `compare OUTDIR`
      mkdir -p "$outdir"
      { printf 'run\tconfig\tgpu\twatch_gpu\titers\toptions\n'
        for i in "${!cfgs[@]}"; do
          printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${stems[$i]}" "${cfgs[$i]}" "${gpus[$i]}" \
                 "${watch_gpu:-${gpus[$i]}}" "$iters" "${opts[$i]}"
        done; } > "$outdir/.ablate.tsv.tmp-$$"
      mv -f "$outdir/.ablate.tsv.tmp-$$" "$outdir/ablate.tsv"
    fi
    for i in "${!cfgs[@]}"; do  # `train` and `watch` of each run, as if typed by hand
      work=$outdir/${stems[$i]}
      echo "${stems[$i]}: training on GPU ${gpus[$i]}, evaluations on GPU" \
           "${watch_gpu:-${gpus[$i]}}, in $work"
      arm=()  # the run's own options, after the common ones
      [ -z "${opts[$i]}" ] || arm=("EXTRA_OPTS=${EXTRA_OPTS:+$EXTRA_OPTS }${opts[$i]}"
                                   "TEST_OPTS=${TEST_OPTS:+$TEST_OPTS }${opts[$i]}")
      train=(env "CUDA_VISIBLE_DEVICES=${gpus[$i]}" "CONFIG=${cfgs[$i]}" GPUS=1
             "PREEMPT=${PREEMPT:-0}" "${arm[@]}" bash "$SELF" train "$root" "$work" "$iters")
      watch=(env "CUDA_VISIBLE_DEVICES=${watch_gpu:-${gpus[$i]}}" "CONFIG=${cfgs[$i]}" GPUS=1
             "${arm[@]}" bash "$SELF" watch "$root" "$work")
      [ "${WATCH:-1}" = 1 ] || watch=(echo "${stems[$i]}: no watch (WATCH=0)")
      if [ -n "${DRY_RUN:-}" ]; then  # the training commands too; the watch would wait
        run "${train[@]}"; "${train[@]}"; run "${watch[@]}"
      else
        "${train[@]}"; "${watch[@]}"
      fi
    done
    echo "follow one: learning_check.sh wait $outdir/<run>; side by side once checkpoints" \
         "are evaluated: learning_check.sh compare $outdir"
    ;;
  pack)
    src=${1:?OUTDIR or WORK}; out=${2:?TARBALL}
    [ -d "$src" ] || die "pack: $src is not a folder"
    src=$(cd "$src" && pwd)
    list=$(mktemp); trap 'rm -f "$list"' EXIT
    (cd "$(dirname "$src")" && find "$(basename "$src")" -type f \
       \( -name '*.csv' -o -name '*.json' -o -name '*.log' -o -name '*.tsv' -o -name '*.txt' \
          -o -name DONE \) -not -path '*/preds/*' -print0 | sort -z) > "$list"
    n=$(tr -cd '\0' < "$list" | wc -c)
    [ "$n" -gt 0 ] || die "pack: no result files (csv, json, log, tsv, txt) under $src"
    names=(); [ "${SAFE_NAMES:-0}" = 1 ] && names=(--transform 's/[+=]/_/g')
    tmp="$out.tmp-$$"
    tar -C "$(dirname "$src")" --null -T "$list" "${names[@]}" -czf "$tmp" \
      || { rm -f "$tmp"; die "pack: writing $out failed"; }
    mv -f "$tmp" "$out"
    echo "packed $n result files of $src into $out ($(du -h "$out" | cut -f1))"
    ;;
  compare)
    [ $# -gt 0 ] || die "compare: OUTDIR or WORK... needed"
    run "$PY" tools/analysis_tools/compare_runs.py "$@"
    ;;
  *)
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { print }' "$SELF"; exit 2;;
esac
