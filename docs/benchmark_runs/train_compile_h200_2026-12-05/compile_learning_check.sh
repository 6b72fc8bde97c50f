#!/usr/bin/env bash
# Compiled training against eager on one GPU: the learning-check recipe (paper architecture on
# synthetic sequences, batch 2, bf16) trained twice side by side on GPU 0 from the same seed,
# once as configured and once with CompileModulesHook (what `tools/train.py --compile` adds),
# each checkpoint scored on the held-out sequences (learning_check.sh ablate + watch).
# Written 2026-12-05 (seventeenth session), not run yet (no GPU could be started). After the
# staging calls of train_step_h200_2026-12-03/restage.sh (no checkpoint):
#   S=docs/benchmark_runs/train_compile_h200_2026-12-05/compile_learning_check.sh
#   bash $S start ITERS   # data, then both trainings in the background
#   bash $S poll          # progress
#   bash $S pack          # the runs side by side, and their results -> $OUT
set -uo pipefail
. /tmp/gpu_env
LC=tools/analysis_tools/learning_check.sh
P=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py
C=/tmp/lc/cfg/$(basename $P .py)_compiled.py
t0=$(date +%s)
case ${1:?start, poll or pack} in
  start)
    iters=${2:?ITERS}
    WORKERS=16 bash $LC data /tmp/lc > $OUT/data.log 2>&1 || { tail -20 $OUT/data.log; exit 1; }
    echo "data at $(( $(date +%s) - t0 )) s"
    mkdir -p /tmp/lc/cfg
    python - "$P" "$C" <<'PY' || exit 1
import sys
from mmengine import Config
cfg = Config.fromfile(sys.argv[1])
cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [dict(type='CompileModulesHook')]
cfg.dump(sys.argv[2])
PY
    LOADER_WORKERS=6 TEST_WORKERS=4 CKPT_EVERY=$(( iters / 2 )) \
      bash $LC ablate /tmp/lc /tmp/lc/cmp $iters \
      $P=0 +train_dataloader.batch_size=2 $C=0 +train_dataloader.batch_size=2 ;;
  poll)
    for w in /tmp/lc/cmp/*/; do
      echo "$w: $(ls $w | grep -c 'iter_.*pth') checkpoints, DONE $( [ -f $w/DONE ] && echo y)"
      grep -h "Iter(train)" $w/part1.log 2>/dev/null | tail -1 | cut -c1-240
      [ -f $w/curve.csv ] && cat $w/curve.csv
    done ;;
  pack)
    bash $LC compare /tmp/lc/cmp --all > $OUT/compare.txt 2>&1; cat $OUT/compare.txt
    SAFE_NAMES=1 bash $LC pack /tmp/lc/cmp $OUT/cmp.tar.gz ;;
esac
