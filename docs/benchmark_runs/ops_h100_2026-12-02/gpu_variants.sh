#!/usr/bin/env bash
# Variant archives: var/NAME.tar.gz (untracked; `tar czf var/NAME.tar.gz ops/csrc trackocc/ops` of a state,
# or `git archive REV ops/csrc trackocc/ops | gzip`); the work tree is built as "tree".
# usage: bash docs/benchmark_runs/ops_h100_2026-12-02/gpu_variants.sh OPS VAR... : tree + each var/VAR.tar.gz built side by side, bev_pool GPU tests on each, benchmark_ops --graph on each
set -uo pipefail
ops=$1; shift
t0=$(date +%s)
build() { (cd "$1" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=6 python setup.py build_ext --inplace > "$OUT/build_$2.log" 2>&1); }
build "$PWD" tree & pids="$!"
for v in "$@"; do
  rm -rf /tmp/v_$v && mkdir -p /tmp/v_$v && cp -r setup.py pyproject.toml trackocc tools ops tests /tmp/v_$v/
  tar -C /tmp/v_$v -xzf var/$v.tar.gz
  build /tmp/v_$v $v & pids="$pids $!"
done
wait $pids
echo "built at $(( $(date +%s) - t0 )) s"; grep -l -i "error" $OUT/build_*.log
for v in tree "$@"; do
  [ -n "${TESTS_TREE_ONLY:-}" ] && [ "$v" != tree ] && continue  # TESTS_TREE_ONLY=1: GPU tests of the tree only
  root=$PWD; [ "$v" = tree ] || root=/tmp/v_$v
  (cd $root && PYTHONPATH=$root python -m pytest -m gpu tests/ops/test_ops_cuda.py -q -p no:cacheprovider -k "${TESTK:-bev_pool}" > "$OUT/tests_$v.log" 2>&1); echo "tests $v rc $?: $(tail -1 $OUT/tests_$v.log)"
done
for v in tree "$@"; do
  root=$PWD; [ "$v" = tree ] || root=/tmp/v_$v
  mkdir -p /tmp/prof_$v
  (cd $root && PYTHONPATH=$root python tools/analysis_tools/benchmark_ops.py --ops $ops --iters 50 --warmup 10 --graph --profile /tmp/prof_$v/ --out $OUT/ops_$v.md ${BENCH_ARGS:-} > $OUT/ops_$v.log 2>&1); echo "$v rc $? at $(( $(date +%s) - t0 )) s"
done
for v in tree "$@"; do echo "== $v"; grep -v '^|---' $OUT/ops_$v.md | grep -E "ext|pytorch" | cut -c1-200; grep -h -A12 "kernels," /tmp/prof_$v/*float32_ext.txt 2>/dev/null | grep -E "kernels,|kernel|Fill" | cut -c1-60,200-280; done
(cd /tmp && tar czf $OUT/prof.tar.gz prof_*) ; (cd $OUT && tar czf logs.tar.gz build_*.log tests_*.log ops_*.log && rm -f build_*.log tests_*.log ops_*.log)
echo "done at $(( $(date +%s) - t0 )) s"
