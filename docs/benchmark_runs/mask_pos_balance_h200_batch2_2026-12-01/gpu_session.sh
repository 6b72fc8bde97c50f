#!/usr/bin/env bash
# phases on the GPU machine; the code runs from /tmp/w (a snapshot of HEAD), logs to $OUT
set -uo pipefail
phase=$1; shift
W=/tmp/w; R=/tmp/lc/data; S=/tmp/lc/sweep
M=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py
LC="bash tools/analysis_tools/learning_check.sh"
collect() {  # small result files of the sweep into $OUT
  [ -d $S ] || return 0
  (cd /tmp/lc && find sweep -type f \( -name '*.csv' -o -name '*.json' -o -name '*.log' -o -name '*.tsv' \) -size -8M \
     -print0 | tar --null -T - -cf - | tar -C "$OUT" -xf -) 2>/dev/null || true
}
case $phase in
  setup)
    bash .gpuwheels/part3/gpu_env.sh install > $OUT/install.log 2>&1 || { tail -30 $OUT/install.log; exit 1; }
    . /tmp/gpu_env
    rm -rf $W && mkdir -p $W && tar --exclude=./.gpuwheels --exclude=./.run1 --exclude=./.venv --exclude=./.git -cf - . | tar -C $W -xf - && cd $W
    mkdir -p /tmp/lc
    (WORKERS=12 setsid nohup $LC data $R > /tmp/lc/data.log 2>&1; echo "data rc $?" >> /tmp/lc/data.log) &
    t0=$(date +%s)
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
    echo "ext build $(( $(date +%s) - t0 )) s"
    python -m pytest -m gpu tests/utils/test_sync_batch_norm.py tests/ops tests/models/test_merge_logits_dtype.py -q -rs -p no:cacheprovider 2>&1 | tail -15 | tee $OUT/gpu_tests.log
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/nvidia_smi.txt
    python -c "import torch; print(torch.__version__, torch.version.cuda)"
    tail -3 /tmp/lc/data.log
    ;;
  bench)
    [ -f /tmp/gpu_env ] || { echo "no /tmp/gpu_env: machine is fresh"; exit 3; }
    . /tmp/gpu_env; cd $W
    python tools/analysis_tools/benchmark.py configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py \
      --train --mode bf16 compile-bf16 --frames 20 --warmup 5 --keep-going --json $OUT/train_bf16_compile.json \
      > $OUT/train_bf16_compile.log 2>&1
    echo "rc $?"; tail -40 $OUT/train_bf16_compile.log
    cat /tmp/lc/data.log | tail -4
    ;;
  go)
    bash .gpuwheels/part3/gpu_env.sh install > $OUT/install.log 2>&1 || { tail -30 $OUT/install.log; exit 1; }
    . /tmp/gpu_env
    rm -rf $W && mkdir -p $W && tar --exclude=./.gpuwheels --exclude=./.run1 --exclude=./.venv --exclude=./.git -cf - . | tar -C $W -xf - && cd $W
    mkdir -p /tmp/lc
    (WORKERS=14 $LC data $R > /tmp/lc/data.log 2>&1; echo "data rc $?" >> /tmp/lc/data.log) &
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
    wait
    tail -4 /tmp/lc/data.log
    grep -q "data rc 0" /tmp/lc/data.log || exit 1
    FIT_SEQS=6 CKPT_EVERY=${CKPT_EVERY:-250} LOADER_WORKERS=6 TEST_WORKERS=4 $LC ablate $R $S "$@"
    sleep 60; for d in $S/*/; do tail -3 $d/part1.log; done
    ;;
  wait)
    [ -f /tmp/gpu_env ] || { echo "no /tmp/gpu_env: machine is fresh"; exit 3; }
    . /tmp/gpu_env; cd $W
    limit=${1:-500}
    first=$(ls -d $S/*/ | head -1)
    $LC wait $first $limit
    for d in $S/*/; do echo "== $d"; $LC wait $d 0 | tail -12; done
    collect
    ;;
esac
