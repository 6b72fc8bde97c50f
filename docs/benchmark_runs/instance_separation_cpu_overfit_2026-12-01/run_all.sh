#!/usr/bin/env bash
# all settings and seeds, from the repository root; one JSON line per run:
#   bash run_all.sh            200 steps, balances 0 0.05 0.5 -> nb_<balance>_<seed>.json
#   bash run_all.sh 400 0 0.05 400 steps of the balances given -> steps400/nb_<balance>_<seed>.json
D=docs/benchmark_runs/instance_separation_cpu_overfit_2026-12-01
steps=${1:-200}; shift || true
balances=${*:-0 0.05 0.5}
out=$D; [ "$steps" = 200 ] || out=$D/steps$steps
mkdir -p "$out"
for b in $balances; do for s in 0 1 2 3; do
  python $D/overfit_neighbours.py $b $s $steps > $out/nb_${b}_${s}.json
done; done
