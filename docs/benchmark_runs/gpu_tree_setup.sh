# Sourced by the GPU session scripts of docs/benchmark_runs/*/ (bash; the functions after
# `. /tmp/gpu_env`, with OUT set). Defaults for what a script has not set: the tree's copy W,
# the learning-check data R and runs S, the recipe config M, LC, and t_start (now).
: "${W:=/tmp/w}" "${R:=/tmp/lc/data}" "${S:=/tmp/lc/sweep}"
: "${M:=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py}"
: "${LC:=bash tools/analysis_tools/learning_check.sh}" "${t_start:=$(date +%s)}"
# tree_data_ext: copy the work tree to $W and cd there, make the learning-check data in $R in
# the background, build the CUDA extension (sm_90), and wait for the data. Returns non-zero
# (after printing the log's tail) when the build or the data fails.
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

# held_out_set NAME SEQS FRAMES SEED WORKERS: a held-out set $R/NAME (SEQS sequences x FRAMES
# frames) made in the background, detached (log /tmp/lc/NAME.log, "data rc N" at its end)
held_out_set() {
  local data="nice python tools/create_data.py synthetic --out-dir $R/$1 --train-seqs 0"
  data="$data --val-seqs $2 --frames-per-seq $3 --seed $4 --image-size 960 640 --workers $5"
  setsid nohup bash -c "$data --no-progress --overwrite > /tmp/lc/$1.log 2>&1; \
    echo \"data rc \$?\" >> /tmp/lc/$1.log" > /dev/null 2>&1 < /dev/null &
}

# recipe_and_held_out ITERS: the learning-check recipe ($M at batch 2, ITERS iterations, one
# checkpoint at the end, no watch) trained in the background, and beside it the 240-frame
# held-out set $R/vlong (12 sequences x 20 frames, seed 3) and, with LONG_SEQS=1, $R/vseq
# (4 sequences x 100 frames, seed 4: a camera rig kept 100 frames, nearer a Waymo segment)
recipe_and_held_out() {
  WATCH=0 CKPT_EVERY=$1 LOADER_WORKERS=8 $LC ablate "$R" "$S" "$1" "$M=0" \
    +train_dataloader.batch_size=2
  echo "training started at $(( $(date +%s) - t_start )) s"
  held_out_set vlong 12 20 3 4
  [ "${LONG_SEQS:-0}" = 1 ] && held_out_set vseq 4 100 4 4
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

# follow_until SECONDS: follow the run in $S until SECONDS after t_start (at least 5 s)
follow_until() {
  local left=$(( $1 - ($(date +%s) - t_start) )); [ $left -gt 5 ] || left=5
  local work; work=$(ls -d "$S"/*/ 2> /dev/null | head -1)
  [ -n "$work" ] || { echo "follow_until: no run folder in $S (did the training start?)"; return 1; }
  $LC wait "$work" $left | tail -8
}
