#!/usr/bin/env bash
# The README's main job (run by `make demo` after setup): synthetic demo data -> brief CPU training of
# the tiny config -> streaming test printing the OccSTQ table. Idempotent: reuses existing data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=data/synthetic-waymo
CFG=configs/trackocc/trackocc_tiny_synthetic.py
WORK=work_dirs/demo
ITERS=${DEMO_ITERS:-10}

missing=()
[ -f tools/create_data.py ] || missing+=("synthetic data generator (tools/create_data.py, issue 3)")
[ -f "$CFG" ] || missing+=("tiny config $CFG (issue 5)")
[ -f tools/train.py ] && [ -f tools/test.py ] || missing+=("tools/train.py + tools/test.py (issue 5)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "demo: not available yet:"; printf '  - %s\n' "${missing[@]}"; exit 1
fi

if [ ! -f "$DATA/kitti_format/waymo_infos_val_jpg.pkl" ]; then
  echo "[demo] generating the synthetic demo set in $DATA"
  $PY tools/create_data.py synthetic --out-dir "$DATA" --train-seqs 2 --val-seqs 1 \
      --frames-per-seq 6 --seed 0 --workers 2
fi
$PY tools/create_data.py check --data-root "$DATA"

echo "[demo] training $CFG for $ITERS iterations on CPU"
$PY tools/train.py "$CFG" --work-dir "$WORK" \
    --cfg-options train_cfg.max_iters="$ITERS" default_hooks.checkpoint.interval="$ITERS"
echo "[demo] streaming test on the validation sequences"
$PY tools/test.py "$CFG" "$WORK/iter_${ITERS}.pth" --work-dir "$WORK"
