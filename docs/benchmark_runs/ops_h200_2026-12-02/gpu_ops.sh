#!/usr/bin/env bash
# Issue 16 item 4, before and after on one machine: builds the extension of the work tree and,
# side by side, of a baseline (a copy of the tree with ops/csrc and trackocc/ops replaced by
# BASE_TAR, e.g. `git archive f112a97 ops/csrc trackocc/ops | gzip`), runs the GPU op tests on
# the new build, then benchmark_ops.py --graph on both (tables, logs and kernel profiles in
# $OUT). The image's torch is enough (no OpenMMLab; the two mmcv comparisons of the GPU tests
# fail there with ModuleNotFoundError).
#   bash docs/benchmark_runs/ops_h200_2026-12-02/gpu_ops.sh BASE_TAR [benchmark_ops.py options]
set -uo pipefail
base_tar=${1:?BASE_TAR}; shift
t0=$(date +%s)
build() {
  (cd "$1" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=8 python setup.py build_ext \
    --inplace > "$OUT/build_$2.log" 2>&1)
}
rm -rf /tmp/base && mkdir -p /tmp/base
cp -r setup.py pyproject.toml trackocc tools ops /tmp/base/
tar -C /tmp/base -xzf "$base_tar"
build "$PWD" new & new_pid=$!
build /tmp/base base & base_pid=$!
wait $new_pid || { tail -40 "$OUT/build_new.log"; exit 1; }
wait $base_pid || { echo "baseline build failed"; tail -20 "$OUT/build_base.log"; }
echo "built at $(( $(date +%s) - t0 )) s"
if python -c "import pytest" 2>/dev/null; then
  PYTHONPATH=$PWD python -m pytest -m gpu tests/ops/test_ops_cuda.py -q -rfEs \
    -p no:cacheprovider > "$OUT/tests.log" 2>&1
  echo "tests rc $?"; grep -E "passed|failed|Error" "$OUT/tests.log" | tail -12
else
  echo "pytest is not installed here: the GPU op tests did NOT run"
fi
mkdir -p /tmp/prof_new /tmp/prof_base
for v in new base; do
  root=$PWD; [ "$v" = base ] && root=/tmp/base
  (cd "$root" && PYTHONPATH=$root python tools/analysis_tools/benchmark_ops.py \
    --ops bev_pool msda3d --iters 50 --warmup 10 --graph --profile "/tmp/prof_$v/" \
    --out "$OUT/ops_$v.md" "$@" > "$OUT/ops_$v.log" 2>&1)
  echo "$v rc $? at $(( $(date +%s) - t0 )) s"
  tar -C /tmp -czf "$OUT/prof_$v.tar.gz" "prof_$v" 2>/dev/null
done
for v in new base; do echo "== $v"; grep -v '^|---' "$OUT/ops_$v.md" | cut -c1-220; done
grep -H "^\[profile\]" "$OUT"/ops_*.log | head -40
# at most 8 files come back from a call: the logs go in one archive
(cd "$OUT" && tar -czf logs.tar.gz build_*.log tests.log ops_*.log && rm -f build_*.log tests.log ops_*.log)
echo "done at $(( $(date +%s) - t0 )) s"
