#!/usr/bin/env bash
# every setting and seed, two at a time, from the repository root:
#   bash run_all.sh [STEPS]   -> cp_<balance>_<sigma>_<seed>.json (sigma 0: no prior;
#                                the prior unbounded, as at commit cd8dd88)
#   BOUND=8 SIGMAS=1.5 bash run_all.sh -> bounded/cp_...json (the prior bounded at 8)
#   LEARN=0 BOUND=8 SIGMAS=1.5 bash run_all.sh -> fixed_sigma/cp_...json (spread kept at SIGMA)
D=docs/benchmark_runs/center_prior_cpu_overfit_2026-12-01
steps=${1:-200}; bound=${BOUND:-none}; learn=${LEARN:-1}
out=$D; [ "$bound" = none ] || out=$D/bounded; [ "$learn" = 1 ] || out=$D/fixed_sigma; mkdir -p $out
for b in ${BALANCES:-0 0.05}; do for sigma in ${SIGMAS:-0 1.5}; do for s in 0 1 2 3; do
  python $D/overfit_center_prior.py $b $sigma $s $steps $bound $learn > $out/cp_${b}_${sigma}_${s}.json &
  [ $(( s % 2 )) = 1 ] && wait
done; done; done; wait
