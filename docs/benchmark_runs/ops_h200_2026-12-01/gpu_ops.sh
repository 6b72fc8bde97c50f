#!/usr/bin/env bash
# Issue 16 item 4 on a bare GPU machine: the image's torch is enough (no OpenMMLab wheels).
# Builds the extension in the work tree (ninja keeps its objects while the machine is held,
# so a second call recompiles only the changed kernels), runs the GPU op tests, then
# benchmark_ops.py with kernel profiles ($OUT/prof_TAG.tar.gz).
#   bash docs/benchmark_runs/ops_h200_2026-12-01/gpu_ops.sh TAG [benchmark_ops.py options]
set -uo pipefail
tag=${1:?TAG}; shift
t0=$(date +%s)
export PYTHONPATH=$PWD:${PYTHONPATH:-}
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace \
  > $OUT/build_$tag.log 2>&1 || { tail -40 $OUT/build_$tag.log; exit 1; }
echo "ext built at $(( $(date +%s) - t0 )) s"
if python -c "import pytest" 2>/dev/null; then
  python -m pytest -m gpu tests/ops/test_ops_cuda.py -q -rs \
    -p no:cacheprovider > $OUT/tests_$tag.log 2>&1; echo "tests rc $?"; tail -3 $OUT/tests_$tag.log
else
  echo "pytest is not installed here: the GPU op tests did NOT run"
fi
python tools/analysis_tools/benchmark_ops.py --ops bev_pool msda3d --iters 50 --warmup 10 \
  --profile /tmp/prof_$tag/ --out $OUT/ops_$tag.md "$@" 2>&1 | grep -v '^|' | tail -24
tar -C /tmp -czf $OUT/prof_$tag.tar.gz prof_$tag
cat $OUT/ops_$tag.md
echo "done at $(( $(date +%s) - t0 )) s"
