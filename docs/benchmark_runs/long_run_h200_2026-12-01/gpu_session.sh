#!/usr/bin/env bash
# Phases of one long learning-check run on the GPU machine (docs/benchmark.md, "Learning check:
# one long run"). Code runs from /tmp/w (a copy of the work tree); results come back packed in $OUT.
#   stage-mmcv              (a call of its own, carrying .gpuwheels/mmcv) keep the mmcv wheel in /tmp:
#                           once the tracked tree passes ~12 MB, part3 + mmcv + tree exceed 64 MiB;
#                           past ~27 MB carry it in two parts, .gpuwheels/mmcva then mmcvb
#   go ITERS [CKPT_EVERY]   install, copy, data + CUDA extension, start the run, GPU tests beside it,
#                           follow it until the call's end (env FIT_SEQS, default 6; GPU_TESTS:
#                           the pytest paths, default the three of this run)
#   wait [SECONDS]          follow it; pack what is evaluated so far
#   final                   follow it to its end, render the held-out sequence 1002, pack
#   seeds                   after training: the last checkpoint of every run scored on the
#                           held-out sets of env EXTRA_SEEDS (made by `go`, e.g. "7 11 13"),
#                           in <run>/eval_iter_N_seedS/ (RAW=1: also without the run's piece
#                           tracker, in ..._seedS_raw/), all at once on the one GPU; pack
#   stage-ckpt              (a call of its own per chunk, carrying work_dirs/trained/carry_N)
#                           keep the carried checkpoint chunks in /tmp/ckpt_stage; `go` joins
#                           them (NAME.pth.part_*) into /tmp/ckpt/NAME.pth
#   bring-ckpt K            the last checkpoint of the first run, fp16 (publish_model.py), in
#                           15 MB pieces: pieces 4K..4K+3 into $OUT (one call per K)
# env FIRST="CONFIG[,+KEY=VALUE...] ITERS STOP": `go` trains a first stage (the first STOP
# iterations of an ITERS schedule, batch 2, in /tmp/lc/first) and starts the runs of CONFIGS
# from its iter_STOP.pth once it has ended (learning_check.sh STOP_AT / AFTER)
set -uo pipefail
phase=$1; shift
W=/tmp/w; R=/tmp/lc/data; S=/tmp/lc/sweep; F=/tmp/lc/first
# env CONFIG: the run's config (default: the recipe this run trained); CONFIGS: several,
# trained side by side on the one GPU (learning_check.sh ablate), each at batch 2; a CONFIGS
# word CONFIG,+KEY=VALUE,... adds that run's --cfg-options (e.g. +load_from=/tmp/ckpt/X.pth)
M=${CONFIG:-configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance.py}
read -r -a CFGS <<<"${CONFIGS:-$M}"
LC="bash tools/analysis_tools/learning_check.sh"
t_start=$(date +%s)
pack() {  # results, and the held-out predictions of every evaluated checkpoint (~2 MB each)
  [ -d $S ] || return 0
  SAFE_NAMES=1 $LC pack $S $OUT/results.tar.gz
  [ ! -d $F ] || SAFE_NAMES=1 $LC pack $F $OUT/first_stage.tar.gz  # FIRST's logs
  local preds; preds=$(cd $S && ls -d */curve/iter_*/preds */eval_iter_*/preds 2>/dev/null)
  if [ -z "$preds" ]; then echo "no evaluated predictions to pack yet"
  else (cd $S && tar -czf $OUT/preds.tar.gz $preds) || echo "packing the predictions failed"; fi
}
follow() {  # follow the (first) run for up to $1 s, print the curves so far
  local work others first until=$(( $(date +%s) + $1 ))
  first=$(ls -d $F/*/ 2>/dev/null | head -1)
  if [ -n "$first" ] && [ ! -f "$first/DONE" ]; then  # the first stage runs: follow it
    echo "== first stage $first"; $LC wait "$first" "$1" | tail -4; fi
  work=$(ls -d $S/*/ 2>/dev/null | head -1)
  [ -n "$work" ] || { echo "no run under $S"; return 1; }
  echo "== $work"; $LC wait "$work" $(( until - $(date +%s) )) | tail -25
  for others in $(ls -d $S/*/ | tail -n +2); do echo "== $others"; $LC wait "$others" 1 | tail -12; done
}
stage_mmcv() {  # keep the carried mmcv wheel (or its parts) in /tmp/mmcv_stage, join the parts
  mkdir -p /tmp/mmcv_stage && cp .gpuwheels/mmcv*/* /tmp/mmcv_stage/ || return 1
  (cd /tmp/mmcv_stage && for p in *.whl.part_0; do [ -e "$p" ] || continue; whl=${p%.part_0}
    [ $(ls $whl.part_* | wc -l) = "${MMCV_PARTS:-2}" ] && cat $(ls $whl.part_* | sort -V) > $whl.tmp \
      && mv $whl.tmp $whl && rm $whl.part_* && echo "$whl joined, sha256 $(sha256sum < $whl | cut -c1-16)"
  done; true)
}
case $phase in
  stage-ckpt)
    mkdir -p /tmp/ckpt_stage && cp work_dirs/trained/carry_*/* /tmp/ckpt_stage/ && ls -la /tmp/ckpt_stage
    ;;
  stage-mmcv)  # the wheel whole (.gpuwheels/mmcv) or in parts (.gpuwheels/mmcva, mmcvb: WHEEL.part_K,
    # one call each once the tracked tree passes ~27 MB); the parts are joined once all came,
    # here or in `go` (which may carry the last part)
    stage_mmcv || exit 1; ls -la /tmp/mmcv_stage
    ;;
  go)
    iters=${1:?ITERS}; every=${2:-$(( iters / 4 ))}
    if compgen -G ".gpuwheels/mmcv?/*" > /dev/null; then stage_mmcv || exit 1; fi
    if ! ls .gpuwheels/mmcv/*.whl > /dev/null 2>&1 && [ -d /tmp/mmcv_stage ]; then
      mkdir -p .gpuwheels/mmcv && cp /tmp/mmcv_stage/*.whl .gpuwheels/mmcv/; fi
    bash .gpuwheels/part3/gpu_env.sh install > $OUT/install.log 2>&1 || { tail -30 $OUT/install.log; exit 1; }
    . /tmp/gpu_env
    . docs/benchmark_runs/gpu_tree_setup.sh && tree_data_ext || exit 1
    if [ -d /tmp/ckpt_stage ]; then mkdir -p /tmp/ckpt
      for first in /tmp/ckpt_stage/*.part_00; do name=$(basename "$first" .part_00)
        cat /tmp/ckpt_stage/$name.part_* > /tmp/ckpt/$name
        echo "$name: $(ls /tmp/ckpt_stage/$name.part_* | wc -l) chunks, sha256 $(sha256sum < /tmp/ckpt/$name | cut -c1-16) (check against the local file)"
      done; fi
    after=""; from=()
    if [ -n "${FIRST:-}" ]; then  # the first stage, alone on the GPU, no evaluations
      read -r first_cfg first_iters first_stop <<<"$FIRST"; IFS=, read -r -a fo <<<"$first_cfg"
      STOP_AT=$first_stop CKPT_EVERY=$first_stop WATCH=0 LOADER_WORKERS=8 \
        $LC ablate $R $F "${first_iters:?FIRST: ITERS}" "${fo[0]}=0" +train_dataloader.batch_size=2 "${fo[@]:1}" || exit 1
      first_run=$(awk -F'\t' 'NR == 2 { print $1 }' $F/ablate.tsv)
      after=$F/$first_run/DONE; from=("+load_from=$F/$first_run/iter_$first_stop.pth")
    fi
    runs=(); for c in "${CFGS[@]}"; do IFS=, read -r -a opts <<<"$c"
      runs+=("${opts[0]}=0" +train_dataloader.batch_size=2 "${opts[@]:1}" "${from[@]}"); done
    loaders=$(( 8 / ${#CFGS[@]} ))
    AFTER=$after FIT_SEQS=${FIT_SEQS:-6} CKPT_EVERY=$every LOADER_WORKERS=$loaders TEST_WORKERS=4 $LC ablate $R $S $iters "${runs[@]}"
    echo "training started at $(( $(date +%s) - t_start )) s"
    for s in ${EXTRA_SEEDS:-}; do  # other held-out seeds, for `seeds` (6 x 10 frames each), beside the training
      setsid nohup bash -c "python tools/create_data.py synthetic --out-dir /tmp/lc/data_s$s/val --train-seqs 0 \
         --val-seqs 6 --frames-per-seq 10 --seed $s --image-size 960 640 --workers 1 \
         --no-progress --overwrite > /tmp/lc/data_s$s.log 2>&1; echo \"data rc \$?\" >> /tmp/lc/data_s$s.log" \
         > /dev/null 2>&1 < /dev/null &
    done
    if [ "${GPU_TESTS:-}" != none ]; then
      python -m pytest -m gpu ${GPU_TESTS:-tests/utils/test_sync_batch_norm.py tests/ops tests/models/test_merge_logits_dtype.py} \
        -q -rs -p no:cacheprovider > $OUT/gpu_tests.log 2>&1; tail -6 $OUT/gpu_tests.log; fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    follow $(( 560 - ($(date +%s) - t_start) )); pack
    ;;
  wait)
    [ -f /tmp/gpu_env ] || { echo "no /tmp/gpu_env: machine is fresh"; exit 3; }
    . /tmp/gpu_env; cd $W
    follow "${1:-560}"; pack
    ;;
  seeds)
    [ -f /tmp/gpu_env ] || { echo "no /tmp/gpu_env: machine is fresh"; exit 3; }
    . /tmp/gpu_env; cd $W
    tags=(""); [ "${RAW:-0}" = 1 ] && tags+=("_raw")
    while IFS=$'\t' read -r run cfg _; do
      [ "$run" = run ] && continue
      last=$(ls $S/$run/iter_*.pth | sed 's/.*iter_\([0-9]*\)\.pth/\1/' | sort -n | tail -1)
      for s in ${EXTRA_SEEDS:?EXTRA_SEEDS}; do
        grep -q "data rc 0" /tmp/lc/data_s$s.log || { echo "seed $s: no data"; tail -3 /tmp/lc/data_s$s.log; continue; }
        for t in "${tags[@]}"; do opts=""; [ "$t" = _raw ] && opts="model.piece_tracker=None"
          (CONFIG=$cfg UNTRAINED=0 TEST_WORKERS=2 EVAL_TAG=seed$s$t TEST_OPTS="$opts" \
             $LC eval /tmp/lc/data_s$s $S/$run "$last" > $S/$run/seed$s$t.log 2>&1
           echo "$run iter_$last seed $s$t rc $?") &
        done
      done
    done < $S/ablate.tsv
    wait
    for w in $S/*/; do  # the watch's evaluation of the last checkpoint on the run's own held-out set
      for _ in $(seq 60); do grep -q "all checkpoints evaluated" $w/watch.log 2>/dev/null && break; sleep 2; done
      tail -2 $w/watch.log; done
    for log in $S/*/seed*.log; do  # the evaluator's summary line of each
      echo "$(basename "$(dirname "$log")") $(basename "$log" .log): $(grep -h '^OccSTQ' "$log" | head -1)"
    done
    pack
    ;;
  bring-ckpt)
    [ -f /tmp/gpu_env ] || { echo "no /tmp/gpu_env: machine is fresh"; exit 3; }
    . /tmp/gpu_env; cd $W; k=${1:?K}
    if [ ! -f /tmp/fp16/done ]; then
      run=$(awk -F'\t' 'NR == 2 { print $1 }' $S/ablate.tsv)
      last=$(ls $S/$run/iter_*.pth | sort -V | tail -1)
      rm -rf /tmp/fp16 && mkdir -p /tmp/fp16
      PYTHONPATH=$W:$PYTHONPATH python tools/model_converters/publish_model.py "$last" /tmp/fp16/trained.pth --dtype fp16 || exit 1
      pub=$(ls /tmp/fp16/trained*.pth); (cd /tmp/fp16 && split -b 15000000 -d -a 2 "$pub" "$(basename "$pub").part_")
      sha256sum "$pub" > /tmp/fp16/done
    fi
    cat /tmp/fp16/done; ls /tmp/fp16/*.part_* | sort | sed -n "$(( 4 * k + 1 )),$(( 4 * k + 4 ))p" | xargs -r cp -t $OUT
    ls -la $OUT
    ;;
  final)
    [ -f /tmp/gpu_env ] || { echo "no /tmp/gpu_env: machine is fresh"; exit 3; }
    . /tmp/gpu_env; cd $W
    work=$(ls -d $S/*/ | head -1); work=${work%/}
    follow "${1:-400}"
    while [ ! -f $work/watch.log ] || ! grep -q "all checkpoints evaluated" $work/watch.log; do
      [ $(( $(date +%s) - t_start )) -lt 520 ] || { echo "watch not done"; break; }; sleep 10; done
    tail -4 $work/watch.log; pack
    [ $(( $(date +%s) - t_start )) -lt 545 ] || { echo "no time left to render"; exit 0; }
    last=$(ls -d $work/curve/iter_*/preds | sort -V | tail -1)  # as run: sort -t_ -k2 -n, which picked iter_900
    python tools/visualize_occupancy.py --data-root $R/val --pred-dir $last --out-dir /tmp/lc/render \
      --gif-width 720 > $OUT/render.log 2>&1 || tail -5 $OUT/render.log
    cp /tmp/lc/render/002/002.png $OUT/seq1002_frame2.png; cp /tmp/lc/render/validation_002.gif $OUT/seq1002.gif
    echo "rendered from $last"; ls -la $OUT
    pack
    ;;
esac
