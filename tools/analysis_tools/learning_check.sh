#!/usr/bin/env bash
# Learning check of a TrackOcc config on synthetic sequences (docs/benchmark.md, "Learning check").
#
#   learning_check.sh data  ROOT              train set (seed 1) and held-out val set (seed 2)
#   learning_check.sh train ROOT WORK ITERS   train in the background; it is stopped once the
#                                             mid-run checkpoint exists and resumed from it
#   learning_check.sh wait  WORK [SECONDS]    follow the training log until it ends (or SECONDS)
#   learning_check.sh eval  ROOT WORK ITERS   OccSTQ / AQ / mIoU of the trained and of the
#                                             untrained model on the held-out set
#
# Environment: CONFIG (default the paper architecture on synthetic data), TRAIN_SEQS (40),
# VAL_SEQS (6), FRAMES (10), IMAGE_SIZE ("960 640"), WORKERS (data generation processes, 16),
# LOADER_WORKERS (12), AMP_DTYPE (bfloat16; empty: the config's own), PYTHON (python),
# EXTRA_OPTS (more --cfg-options for training).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
CONFIG=${CONFIG:-configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1

die() { echo "learning_check: $*" >&2; exit 2; }

train_opts() {  # ROOT ITERS -> --cfg-options of the training run
  local root=$1 iters=$2 half=$(( $2 / 2 ))
  local warm=$(( iters / 10 < 200 ? (iters < 20 ? 1 : iters / 10) : 200 )) amp=${AMP_DTYPE-bfloat16}
  echo "train_dataloader.dataset.data_root=$root/train/" \
       "train_dataloader.num_workers=${LOADER_WORKERS:-12}" \
       "val_dataloader.dataset.data_root=$root/val/" \
       "test_dataloader.dataset.data_root=$root/val/" \
       ${amp:+optim_wrapper.dtype=$amp} \
       "train_cfg.max_iters=$iters train_cfg.val_interval=$(( iters * 10 ))" \
       "param_scheduler.0.end=$warm" \
       "param_scheduler.1.end=$iters param_scheduler.1.T_max=$iters" \
       "default_hooks.checkpoint.interval=$half default_hooks.checkpoint.max_keep_ckpts=3" \
       "default_hooks.logger.interval=10" \
       "randomness.seed=0" \
       ${EXTRA_OPTS:-}
}

cmd=${1:-}; shift || true
case "$cmd" in
  data)
    root=${1:?ROOT}
    read -r W H <<<"${IMAGE_SIZE:-960 640}"
    $PY tools/create_data.py synthetic --out-dir "$root/train" --train-seqs "${TRAIN_SEQS:-40}" \
        --val-seqs 0 --frames-per-seq "${FRAMES:-10}" --seed 1 --image-size "$W" "$H" \
        --workers "${WORKERS:-16}" --no-progress --overwrite
    $PY tools/create_data.py synthetic --out-dir "$root/val" --train-seqs 0 \
        --val-seqs "${VAL_SEQS:-6}" --frames-per-seq "${FRAMES:-10}" --seed 2 \
        --image-size "$W" "$H" --workers "${WORKERS:-16}" --no-progress --overwrite
    # the val split of the held-out root is what the test loop reads
    du -sh "$root/train" "$root/val"
    ;;
  train)
    root=${1:?ROOT}; work=${2:?WORK}; iters=${3:?ITERS}
    half=$(( iters / 2 ))
    mkdir -p "$work"
    opts=$(train_opts "$root" "$iters")
    # part 1 runs until the mid-run checkpoint exists, then is killed (a preempted job);
    # part 2 resumes from it (--resume picks the latest checkpoint of the work dir)
    setsid bash -c "
      $PY tools/train.py $CONFIG --work-dir $work --cfg-options $opts > $work/part1.log 2>&1 &
      pid=\$!
      while kill -0 \$pid 2>/dev/null && [ ! -f $work/iter_$half.pth ]; do sleep 2; done
      if [ -f $work/iter_$half.pth ]; then
        sleep 5; kill -TERM -- -\$pid 2>/dev/null || kill \$pid; wait \$pid 2>/dev/null
        echo \"stopped after iter_$half.pth at \$(date +%T)\" >> $work/part1.log
        $PY tools/train.py $CONFIG --work-dir $work --resume --cfg-options $opts \
            > $work/part2.log 2>&1
        echo \"exit \$? at \$(date +%T)\" >> $work/part2.log
      else
        echo \"part 1 ended before iter_$half.pth\" >> $work/part1.log
      fi
      touch $work/DONE" > "$work/driver.log" 2>&1 < /dev/null &
    echo "training started in the background: $work/part1.log, then $work/part2.log"
    ;;
  wait)
    work=${1:?WORK}; limit=${2:-540}; t=0
    while [ ! -f "$work/DONE" ] && [ "$t" -lt "$limit" ]; do sleep 15; t=$(( t + 15 ))
      log=$(ls -t "$work"/part*.log 2>/dev/null | head -1)
      [ -n "$log" ] && grep -E "Iter\(train\)" "$log" | tail -1 | cut -c1-220 || true
    done
    [ -f "$work/DONE" ] && echo "training finished" || echo "still training after ${limit}s"
    ;;
  eval)
    root=${1:?ROOT}; work=${2:?WORK}; iters=${3:?ITERS}
    ckpt=$work/iter_$iters.pth
    [ -f "$ckpt" ] || die "$ckpt does not exist (training not finished?)"
    opts="test_dataloader.dataset.data_root=$root/val/ test_dataloader.num_workers=8"
    $PY tools/test.py "$CONFIG" "$ckpt" --work-dir "$work/test_trained" \
        --csv "$work/trained_per_sequence.csv" --cfg-options $opts 2>&1 | tee "$work/test_trained.log"
    $PY tools/test.py "$CONFIG" --random-init --work-dir "$work/test_untrained" \
        --csv "$work/untrained_per_sequence.csv" --cfg-options $opts randomness.seed=0 2>&1 \
        | tee "$work/test_untrained.log"
    ;;
  *)
    sed -n '2,15p' "$0"; exit 2;;
esac
