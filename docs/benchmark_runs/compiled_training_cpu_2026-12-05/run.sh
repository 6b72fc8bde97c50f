#!/usr/bin/env bash
# Compiled training against eager on the CPU (tiny config, 40 iterations, seed 0), then 3
# iterations compiled with Inductor's random numbers replaced by eager's (fallback_random).
#   bash docs/benchmark_runs/compiled_training_cpu_2026-12-05/run.sh OUT_DIR
# ~6 + 8 + 3 minutes on the 2-core CPU machine. Then: python compare.py OUT_DIR
set -u
OUT=${1:?OUT_DIR}
PY=${PY:-.venv/bin/python}
mkdir -p $OUT
$PY -c "
from trackocc.datasets.synthetic import generate_synthetic_dataset
generate_synthetic_dataset('$OUT/synthetic-waymo', train_seqs=2, val_seqs=1, frames_per_seq=4,
                           seed=3, image_size=(192, 128), side_height=96, workers=1,
                           progress=False)"
R=$OUT/synthetic-waymo/
opts() {
  echo train_dataloader.dataset.data_root=$R val_dataloader.dataset.data_root=$R \
    test_dataloader.dataset.data_root=$R train_dataloader.num_workers=0 \
    val_dataloader.num_workers=0 test_dataloader.num_workers=0 train_cfg.max_iters=$1 \
    train_cfg.val_interval=1000 default_hooks.checkpoint.interval=$1 \
    default_hooks.logger.interval=1 randomness.seed=0
}
CFG=configs/trackocc/trackocc_tiny_synthetic.py
for run in eager compiled; do
  extra=""; [ $run = compiled ] && extra="--compile"
  OMP_NUM_THREADS=2 $PY tools/train.py $CFG --work-dir $OUT/$run $extra \
    --cfg-options $(opts 40) > $OUT/$run.log 2>&1
  echo "$run rc=$?"
done
OMP_NUM_THREADS=2 $PY -c "
import runpy, sys
import torch._inductor.config as config
config.fallback_random = True  # Inductor draws dropout masks as eager does
sys.argv = ['tools/train.py', '$CFG', '--work-dir', '$OUT/compiled_fr', '--compile',
            '--cfg-options'] + '$(opts 3)'.split()
runpy.run_path('tools/train.py', run_name='__main__')" > $OUT/compiled_fr.log 2>&1
echo "compiled_fr rc=$?"
for run in eager compiled compiled_fr; do
  cp "$(ls $OUT/$run/*/vis_data/scalars.json | tail -1)" $OUT/scalars_$run.json
done
