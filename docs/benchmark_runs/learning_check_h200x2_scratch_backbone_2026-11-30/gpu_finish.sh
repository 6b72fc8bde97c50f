# After training: final checkpoint curve point (GPU 0) beside the held-out benchmark (GPU 1),
# renders, 1-GPU vs 2-GPU streaming, results to $OUT.
set -u
. /tmp/gpu_env
W=/tmp/lc; ITERS=${ITERS:-975}
# the device budget ends before the 1300 iterations: stop after iter_$ITERS.pth
while [ ! -f $W/work/iter_$ITERS.pth ]; do sleep 5; done; sleep 5
pkill -f "[n]0=0; while true"; pkill -f "[l]earning_check.sh _drive"; pkill -f "[l]earning_check.sh curve"
pkill -f "[t]ools/train[.]py"; pkill -f "[t]ools/test[.]py"; sleep 3
echo "stopped after iter_$ITERS.pth at $(date +%T)" >> $W/work/part1.log
CFG=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ.py
C=$W/work/iter_$ITERS.pth
# newest code (benchmark / throughput hook) in its own copy; CUDA ops from the training copy
rm -rf /tmp/snap2 && mkdir -p /tmp/snap2 && tar --exclude=./.gpuwheels --exclude=./.git -cf - . | tar -xf - -C /tmp/snap2
cp /tmp/snap/trackocc/_ext*.so /tmp/snap2/trackocc/ 2>/dev/null; cd /tmp/snap2
export PYTHONPATH=/tmp/snap2:${PYTHONPATH:-} PYTHONUNBUFFERED=1
(CUDA_VISIBLE_DEVICES=0 GPUS=1 TEST_WORKERS=8 bash tools/analysis_tools/learning_check.sh curve $W/data $W/work > $W/curve_final.log 2>&1) &
CUDA_VISIBLE_DEVICES=1 python tools/analysis_tools/benchmark.py $CFG $C --data-root $W/data/val/ \
  --mode fp32 graph-bf16 --warmup 5 --keep-going --json $OUT/benchmark_held_out.json > $W/bench.log 2>&1
wait
tail -12 $W/curve_final.log | cut -c1-250
(cd $W/work && tar -czf $OUT/lc_curve.tar.gz --exclude=preds curve)
mkdir -p $W/bundle; cp $W/*.log $W/work/*.log $W/train_start $W/bundle/ 2>/dev/null; cp -r $W/work/*/vis_data $W/work/curve.csv $W/bundle/ 2>/dev/null; tar -czf $OUT/lc_logs.tar.gz -C $W bundle
P=$W/work/curve/iter_$ITERS/preds
CUDA_VISIBLE_DEVICES=1 python tools/visualize_occupancy.py --data-root $W/data/val --pred-dir $P --out-dir $W/render --gif-width 720 > $W/render.log 2>&1; tail -2 $W/render.log
tar -czf $OUT/lc_render.tar.gz -C $W render
O="test_dataloader.dataset.data_root=$W/data/val/ test_dataloader.num_workers=8"
# inference-time ablations of the tracker's birth / death settings (GPU 0, beside the renders)
(for ab in "low_thresh model.score_threshold=0.2 model.tracker.score_thresh=0.2 model.tracker.filter_score_thresh=0.15"; do
  set -- $ab; name=$1; shift
  CUDA_VISIBLE_DEVICES=0 python tools/test.py $CFG $C --work-dir $W/ablate_$name --cfg-options $O "$@" > $W/ablate_$name.log 2>&1
done) &
wait
grep -H "^OccSTQ" $W/ablate_*.log
CUDA_VISIBLE_DEVICES=0 python tools/test.py $CFG $C --work-dir $W/stream1 --cfg-options $O > $W/stream1.log 2>&1
PORT=29611 bash tools/dist_test.sh $CFG $C 2 --work-dir $W/stream2 --cfg-options $O > $W/stream2.log 2>&1
grep -iE "throughput|frames/s|OccSTQ" $W/stream1.log $W/stream2.log | cut -c1-250
mkdir -p $W/bundle; cp $W/*.log $W/work/*.log $W/train_start $W/bundle/ 2>/dev/null
cp -r $W/work/*/vis_data $W/work/curve.csv $W/bundle/ 2>/dev/null
tar -czf $OUT/lc_logs.tar.gz -C $W bundle
ls -la $OUT; tail -5 $W/bench.log | cut -c1-300
