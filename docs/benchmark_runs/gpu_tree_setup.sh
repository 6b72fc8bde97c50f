# Sourced by the GPU session scripts of docs/benchmark_runs/*/ (bash, after `. /tmp/gpu_env`,
# with W, R, LC, OUT and t_start set): copy the work tree to $W and cd there, make the
# learning-check data in $R in the background, build the CUDA extension (sm_90), and wait
# for the data. Returns non-zero (after printing the log's tail) when the build or the data fails.
tree_data_ext() {
  rm -rf "$W" && mkdir -p "$W" /tmp/lc \
    && tar --exclude=./.gpuwheels --exclude=./.venv --exclude=./.git -cf - . | tar -C "$W" -xf - \
    && cd "$W" || return 1
  (WORKERS=14 $LC data "$R" > /tmp/lc/data.log 2>&1; echo "data rc $?" >> /tmp/lc/data.log) &
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace \
    > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; wait; return 1; }
  echo "ext built at $(( $(date +%s) - t_start )) s"
  wait
  tail -3 /tmp/lc/data.log; grep -q "data rc 0" /tmp/lc/data.log || return 1
  echo "data at $(( $(date +%s) - t_start )) s"
}
