#!/usr/bin/env bash
# The GPU machine's OpenMMLab wheels in pieces small enough to travel beside this work tree.
#
# ../shared/gpu/prepare.sh packs them into parts of 45 MiB (.gpuwheels/part1..3, plus the mmcv
# wheel of .gpuwheels/mmcv), but one call carries at most 64 MiB including the work tree, which
# is now 41 MiB. Run here, from the project's root, after prepare.sh:
#     bash docs/benchmark_runs/train_step_h200_2026-12-03/restage.sh [MiB, default 22] [FILE...]
# It writes .gpuwheels/s1..sN (git-ignored), one piece each, and prints the calls: N - 1
# `cp` calls back to back (carry .gpuwheels/sK), then the last one, which joins the pieces,
# installs and leaves /tmp/gpu_env as gpu_env.sh install does. FILEs (e.g. a checkpoint that
# bring-ckpt brought back) travel in the pieces too and land in /tmp/x/extra/ on the machine.
# 18 MiB pieces since 2026-12-03 (fifth session): the tracked tree takes ~45 MiB on disk.
set -euo pipefail
size=${1:-22}; shift || true
w=.gpuwheels
[ -f $w/part1/gpu_env.sh ] && ls $w/mmcv/mmcv-2.1.0-*.whl > /dev/null \
  || { echo "run ../shared/gpu/prepare.sh first (and keep the mmcv wheel)"; exit 1; }
rm -rf $w/s[0-9]* $w/restage && mkdir -p $w/restage
cat $w/part*/chunk.* > $w/restage/bundle.tar
cp $w/mmcv/mmcv-2.1.0-*.whl $w/restage/
if [ $# -gt 0 ]; then mkdir -p $w/restage/extra && cp "$@" $w/restage/extra/; fi
tar -C $w/restage -cf $w/all.tar . && rm -rf $w/restage
split -b "${size}m" -d $w/all.tar $w/chunk. && rm $w/all.tar
n=0
for c in $w/chunk.*; do n=$((n + 1)); mkdir -p $w/s$n; mv "$c" $w/s$n/; done
cp $w/part1/gpu_env.sh $w/s$n/
tree=$(git ls-files -z | du -c --files0-from=- -m | tail -1 | cut -f1)
echo "$n pieces of ${size} MiB; the tracked tree is ~${tree} MiB (a call carries 64 MiB in all)"
for i in $(seq 1 $((n - 1))); do
  echo "call $i (carry .gpuwheels/s$i): mkdir -p /tmp/st && cp .gpuwheels/s$i/chunk.* /tmp/st/"
done
echo "call $n (carry .gpuwheels/s$n): cp .gpuwheels/s$n/chunk.* /tmp/st/ && mkdir -p /tmp/x" \
  "/tmp/gpuwheels .gpuwheels/mmcv .gpuwheels/p && cat /tmp/st/chunk.* | tar -C /tmp/x -xf - &&" \
  "mv /tmp/x/bundle.tar /tmp/gpuwheels/chunk.00 && mv /tmp/x/mmcv-*.whl .gpuwheels/mmcv/ &&" \
  "cp .gpuwheels/s$n/gpu_env.sh .gpuwheels/p/ && : > .gpuwheels/p/chunk.99 &&" \
  "bash .gpuwheels/p/gpu_env.sh install && . /tmp/gpu_env && YOUR COMMAND"
