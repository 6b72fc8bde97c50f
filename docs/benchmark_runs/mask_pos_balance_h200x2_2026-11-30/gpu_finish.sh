# Stop, evaluate the checkpoints the watchers have not, held-out benchmarks of balance 0.05's last
# checkpoint (GPU 0 without, GPU 1 with --channels-last; fp32 eager and the fast path in one
# process each), training speed + profile of the paper config (HEAD code), render, bundle.
set -u
. /tmp/gpu_env
W=/tmp/lc
S=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ
M=${S}_mask-pos-balance.py
LC=tools/analysis_tools/learning_check.sh
RUNS="base mpb05 mpb05b2"
pkill -f "[l]earning_check.sh _watch"; pkill -f "[l]earning_check.sh _drive"; pkill -f "[l]earning_check.sh curve"
pkill -f "[t]ools/train[.]py"; pkill -f "[t]ools/test[.]py"; sleep 2
for r in $RUNS; do echo "stopped at $(date +%T)" >> $W/work_$r/part1.log; done
rm -rf /tmp/snap2 && mkdir -p /tmp/snap2 && tar -xzf .run7b/snap2.tar.gz -C /tmp/snap2
cp /tmp/snap/trackocc/_ext*.so /tmp/snap2/trackocc/; cd /tmp/snap2
export PYTHONPATH=/tmp/snap2:${PYTHONPATH:-} PYTHONUNBUFFERED=1 GPUS=1 TEST_WORKERS=8
(CUDA_VISIBLE_DEVICES=0 CONFIG=$S.py bash $LC curve $W/data $W/work_base > $W/curve_base.log 2>&1) & p1=$!
(CUDA_VISIBLE_DEVICES=0 CONFIG=$M bash $LC curve $W/data $W/work_mpb05 > $W/curve_mpb05.log 2>&1) & p2=$!
(CUDA_VISIBLE_DEVICES=1 CONFIG=$M bash $LC curve $W/data $W/work_mpb05b2 > $W/curve_mpb05b2.log 2>&1) & p3=$!
wait $p1 $p2 $p3
for r in $RUNS; do echo "== $r"; cut -c1-160 $W/work_$r/curve.csv; done
CK=$(ls $W/work_mpb05/iter_*.pth | sort -V | tail -1); echo "benchmark checkpoint $CK"
B=tools/analysis_tools/benchmark.py
G="img_backbone img_neck img_view_transformer volume_encoder_backbone volume_encoder_neck occ_encoder pts_bbox_head"
O="--data-root $W/data/val/ --fuse-conv-bn --mode fp32 graph-bf16 --warmup 5 --keep-going --graph-modules $G --query-budget 400 --autocast-weights"
(CUDA_VISIBLE_DEVICES=0 timeout 170 python $B $M $CK $O --json $OUT/bench_held_out_fast.json > $OUT/bench_fast.log 2>&1) &
(CUDA_VISIBLE_DEVICES=1 timeout 170 python $B $M $CK $O --channels-last --json $OUT/bench_held_out_fast_cl.json > $OUT/bench_fast_cl.log 2>&1) &
mkdir -p $W/bundle
for r in $RUNS; do mkdir -p $W/bundle/$r; cp $W/work_$r/*.log $W/work_$r/curve.csv $W/work_$r/*.py $W/bundle/$r/ 2>/dev/null; cp -r $W/work_$r/*/vis_data $W/bundle/$r/ 2>/dev/null
  (cd $W/work_$r && tar -cf - --exclude=preds --exclude=test curve) | tar -xf - -C $W/bundle/$r; done
cp $W/*.log $W/train_start $W/bundle/ 2>/dev/null
tar -czf $OUT/lc_bundle.tar.gz -C $W bundle
wait
for f in fast fast_cl; do grep "^\[benchmark\]" $OUT/bench_$f.log | cut -c1-400; grep -iE "error|Traceback" $OUT/bench_$f.log | head -3; done
PC=configs/trackocc/trackocc_r50_704x256_3f_8xb1-24e_waymo-occ.py
CUDA_VISIBLE_DEVICES=0 timeout 130 python $B $PC --train --mode bf16 --frames 10 --warmup 3 --profile $OUT/ptrain_ \
   --profile-steps 2 --json $OUT/bench_train.json > $OUT/bench_train.log 2>&1 &
LAST=$(ls -d $W/work_mpb05/curve/iter_* | sort -V | tail -1)
(python tools/visualize_occupancy.py --data-root $W/data/val --pred-dir $LAST/preds --out-dir $W/render --gif-width 720 > $W/render.log 2>&1
 cp $W/render/002/002.png $OUT/seq1002_frame2.png; cp $W/render/validation_002.gif $OUT/seq1002.gif) &
wait; ls -la $OUT
grep "^\[benchmark\]" $OUT/bench_train.log | cut -c1-500; tail -2 $OUT/bench_train.log | cut -c1-300
