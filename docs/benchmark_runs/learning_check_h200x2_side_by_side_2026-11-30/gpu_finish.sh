# Stop the three runs after iter_$ITERS.pth (all three), evaluate every checkpoint not yet
# evaluated (curve), profile graph-bf16 on held-out data, render seq 002, results to $OUT.
set -u
. /tmp/gpu_env
W=/tmp/lc; ITERS=${ITERS:?ITERS}
S=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ
LC=tools/analysis_tools/learning_check.sh
for r in base nomem refine; do while [ ! -f $W/work_$r/iter_$ITERS.pth ] && [ ! -f $W/work_$r/DONE ]; do sleep 5; done; done; sleep 5
pkill -f "[l]earning_check.sh _watch"; pkill -f "[l]earning_check.sh _drive"; pkill -f "[l]earning_check.sh curve"
pkill -f "[t]ools/train[.]py"; pkill -f "[t]ools/test[.]py"; sleep 3
for r in base nomem refine; do echo "stopped after iter_$ITERS.pth at $(date +%T)" >> $W/work_$r/part1.log
  for f in $W/work_$r/iter_*.pth; do n=${f##*iter_}; n=${n%.pth}; [ $n -gt $ITERS ] && rm -f $f; done; done
rm -rf /tmp/snap2 && mkdir -p /tmp/snap2 && tar --exclude=./.gpuwheels --exclude=./.git -cf - . | tar -xf - -C /tmp/snap2
cp /tmp/snap/trackocc/_ext*.so /tmp/snap2/trackocc/ 2>/dev/null; cd /tmp/snap2
export PYTHONPATH=/tmp/snap2:${PYTHONPATH:-} PYTHONUNBUFFERED=1 GPUS=1 TEST_WORKERS=6
(CUDA_VISIBLE_DEVICES=0 CONFIG=$S.py bash $LC curve $W/data $W/work_base > $W/curve_base.log 2>&1) & p1=$!
(CUDA_VISIBLE_DEVICES=0 CONFIG=${S}_no-memory-bank.py bash $LC curve $W/data $W/work_nomem > $W/curve_nomem.log 2>&1) & p2=$!
(CUDA_VISIBLE_DEVICES=1 CONFIG=${S}_sparse-refine.py bash $LC curve $W/data $W/work_refine > $W/curve_refine.log 2>&1) & p3=$!
(sleep 20; while [ ! -f $W/work_base/curve/iter_$ITERS/occstq.json ]; do sleep 3; done; CUDA_VISIBLE_DEVICES=1 python tools/analysis_tools/benchmark.py $S.py $W/work_base/iter_$ITERS.pth --data-root $W/data/val/ \
  --mode fp32 graph-bf16 --warmup 5 --keep-going --profile --json $OUT/benchmark_held_out.json > $W/bench.log 2>&1) &
wait $p1 $p2 $p3
for r in base nomem refine; do echo "== $r"; cat $W/work_$r/curve.csv; done
mkdir -p $W/bundle
for r in base nomem refine; do mkdir -p $W/bundle/$r; cp $W/work_$r/*.log $W/work_$r/curve.csv $W/bundle/$r/ 2>/dev/null; cp -r $W/work_$r/*/vis_data $W/bundle/$r/ 2>/dev/null
  (cd $W/work_$r && tar -cf - --exclude=preds curve) | tar -xf - -C $W/bundle/$r; done
cp $W/*.log $W/train_start $W/bundle/ 2>/dev/null
find /tmp/snap2 -maxdepth 3 -name "*.json" -newer $W/train_start -path "*prof*" -exec cp {} $W/bundle/ \; 2>/dev/null
tar -czf $OUT/lc_bundle.tar.gz -C $W bundle
P=$W/work_base/curve/iter_$ITERS/preds
python tools/visualize_occupancy.py --data-root $W/data/val --pred-dir $P --out-dir $W/render --gif-width 720 > $W/render.log 2>&1; tail -2 $W/render.log
cp $W/render/002/002.png $OUT/seq1002_frame2.png; cp $W/render/validation_002.gif $OUT/seq1002.gif
wait; ls -la $OUT; tail -30 $W/bench.log | cut -c1-300
