set -uo pipefail
# Variant archives: var/NAME.tar.gz (untracked; `tar czf var/NAME.tar.gz ops/csrc trackocc/ops` of a state,
# or `git archive REV ops/csrc trackocc/ops | gzip`); the work tree is built as "tree".
build() { (cd "$1" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=6 python setup.py build_ext --inplace > /tmp/build_$2.log 2>&1); }
build "$PWD" tree & pids="$!"
for v in "$@"; do
  rm -rf /tmp/v_$v && mkdir -p /tmp/v_$v && cp -r setup.py pyproject.toml trackocc tools ops docs var /tmp/v_$v/
  tar -C /tmp/v_$v -xzf var/$v.tar.gz; build /tmp/v_$v $v & pids="$pids $!"
done
wait $pids; echo built
for v in tree "$@"; do
  root=$PWD; [ "$v" = tree ] || root=/tmp/v_$v
  (cd $root && PYTHONPATH=$root ncu --clock-control none -k regex:"bev_pool|elementwise" --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sectors_op_read.sum,lts__t_sectors_op_write.sum,lts__t_sectors_op_red.sum,lts__t_sector_hit_rate.pct,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio python docs/benchmark_runs/ops_h100_2026-12-02/ncu_bev.py > $OUT/ncu_$v.txt 2>&1)
  echo "== $v"; grep -E "^  [a-z_:<>A-Za-z]|duration|bytes|sectors|hit_rate|warps_active|scoreboard" $OUT/ncu_$v.txt | sed -E 's/\(int, .*//' | cut -c1-110 | tail -45
done
