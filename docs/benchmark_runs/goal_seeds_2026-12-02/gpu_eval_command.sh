# The device call that scored the goal checkpoint on seeds 13, 17, 19, 23 (one H200, 199 s),
# after the stagings listed in README.md; run from the repository root of the device's copy.
G=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ_mask-pos-balance_center-prior-unbounded_piece-tracking.py
mkdir -p .gpuwheels/mmcv && cp /tmp/mmcv_stage/*.whl .gpuwheels/mmcv/ \
  && bash .gpuwheels/part3/gpu_env.sh install > $OUT/install.log 2>&1 || { tail $OUT/install.log; exit 1; }
. /tmp/gpu_env
for s in 13 17 19 23; do
  (python tools/create_data.py synthetic --out-dir /tmp/lc/d$s/val --train-seqs 0 --val-seqs 6 \
     --frames-per-seq 10 --seed $s --image-size 960 640 --workers 3 --no-progress --overwrite \
     > /tmp/d$s.log 2>&1) &
done
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $OUT/build.log 2>&1 \
  || { tail $OUT/build.log; exit 1; }
wait; echo "built + data at $SECONDS s"
cat /tmp/ckpt_stage/goal.pth.part_* > /tmp/goal.pth; sha256sum /tmp/goal.pth | cut -c1-16
mkdir -p /tmp/lc/g; ln -sf /tmp/goal.pth /tmp/lc/g/iter_1000.pth
for s in 13 17 19 23; do
  (CONFIG=$G UNTRAINED=0 TEST_WORKERS=3 EVAL_TAG=seed$s bash tools/analysis_tools/learning_check.sh \
     eval /tmp/lc/d$s /tmp/lc/g 1000 > /tmp/lc/g/seed$s.log 2>&1; echo "seed $s rc $?") &
done
wait; echo "evaluated at $SECONDS s"
bash tools/analysis_tools/learning_check.sh pack /tmp/lc/g $OUT/results.tar.gz
(cd /tmp/lc/g && tar -czf $OUT/preds.tar.gz eval_iter_1000_seed*/preds)
for s in 13 17 19 23; do echo "seed $s: $(grep -h '^OccSTQ' /tmp/lc/g/seed$s.log | head -1)"; done
