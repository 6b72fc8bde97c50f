# Issue 14: mask_pos_balance ablation on a short schedule (cosine over ITERS, checkpoints every
# EVERY): GPU 0: base and balance 0.05 (batch 1); GPU 1: balance 0.05 at batch 2. Watchers on GPU 1.
set -u
. /tmp/gpu_env
W=/tmp/lc; mkdir -p $W
ITERS=${ITERS:-600}; EVERY=${EVERY:-200}
rm -rf /tmp/snap && mkdir -p /tmp/snap
tar -xzf .run7/snap.tar.gz -C /tmp/snap  # git archive 16ed5d3 (the training code of the stored runs + merge audit max prob)
cd /tmp/snap
export PYTHONPATH=/tmp/snap:${PYTHONPATH:-} PYTHONUNBUFFERED=1
(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=24 python setup.py build_ext --inplace > $W/build.log 2>&1; echo "build rc=$?" >> $W/build.log) &
WORKERS=24 bash tools/analysis_tools/learning_check.sh data $W/data > $W/data.log 2>&1; echo "data rc=$?"
wait; tail -1 $W/build.log; tail -3 $W/data.log
date +%T > $W/train_start
S=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ
M=${S}_mask-pos-balance.py
LC=tools/analysis_tools/learning_check.sh
export LOADER_WORKERS=8 PREEMPT=0 CKPT_EVERY=$EVERY KEEP_CKPTS=-1 GPUS=1
CUDA_VISIBLE_DEVICES=0 CONFIG=$S.py bash $LC train $W/data $W/work_base $ITERS
CUDA_VISIBLE_DEVICES=0 CONFIG=$M bash $LC train $W/data $W/work_mpb05 $ITERS
CUDA_VISIBLE_DEVICES=1 CONFIG=$M BATCH=2 bash $LC train $W/data $W/work_mpb05b2 $ITERS
sleep 3
CUDA_VISIBLE_DEVICES=1 TEST_WORKERS=4 CONFIG=$S.py bash $LC watch $W/data $W/work_base
for r in mpb05 mpb05b2; do CUDA_VISIBLE_DEVICES=1 TEST_WORKERS=4 CONFIG=$M bash $LC watch $W/data $W/work_$r; done
sleep 40
for r in base mpb05 mpb05b2; do echo "== $r"; grep -E "Iter\(train\)" $W/work_$r/part1.log | tail -1 | cut -c1-200; tail -1 $W/work_$r/part1.log | cut -c1-200; done
