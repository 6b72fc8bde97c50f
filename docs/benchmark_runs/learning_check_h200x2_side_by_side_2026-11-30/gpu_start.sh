# Three single-GPU learning-check runs side by side (issue 14 ablations): GPU 0: base and
# no-memory-bank; GPU 1: sparse-refine. Watchers evaluate each new checkpoint on GPU 1.
set -u
. /tmp/gpu_env
W=/tmp/lc; mkdir -p $W
ITERS=${ITERS:-1500}; EVERY=${EVERY:-250}
rm -rf /tmp/snap && mkdir -p /tmp/snap
tar --exclude=./.gpuwheels --exclude=./.git -cf - . | tar -xf - -C /tmp/snap
cd /tmp/snap
export PYTHONPATH=/tmp/snap:${PYTHONPATH:-} PYTHONUNBUFFERED=1
(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $W/build.log 2>&1; echo "build rc=$?" >> $W/build.log) &
WORKERS=24 bash tools/analysis_tools/learning_check.sh data $W/data > $W/data.log 2>&1; echo "data rc=$?"
wait; tail -1 $W/build.log; tail -3 $W/data.log
python -c "import trackocc.ops as o, torch; print('ops', o.__file__, torch.cuda.device_count())"
date +%T > $W/train_start
S=configs/trackocc/trackocc_r50_704x256_3f_1xb1-2k_synthetic-occ
LC=tools/analysis_tools/learning_check.sh
export LOADER_WORKERS=8 PREEMPT=0 CKPT_EVERY=$EVERY KEEP_CKPTS=-1 GPUS=1
CUDA_VISIBLE_DEVICES=0 CONFIG=$S.py bash $LC train $W/data $W/work_base $ITERS
CUDA_VISIBLE_DEVICES=0 CONFIG=${S}_no-memory-bank.py bash $LC train $W/data $W/work_nomem $ITERS
CUDA_VISIBLE_DEVICES=1 CONFIG=${S}_sparse-refine.py bash $LC train $W/data $W/work_refine $ITERS
sleep 5
CUDA_VISIBLE_DEVICES=1 TEST_WORKERS=4 CONFIG=$S.py bash $LC watch $W/data $W/work_base
CUDA_VISIBLE_DEVICES=1 TEST_WORKERS=4 CONFIG=${S}_no-memory-bank.py bash $LC watch $W/data $W/work_nomem
CUDA_VISIBLE_DEVICES=1 TEST_WORKERS=4 CONFIG=${S}_sparse-refine.py bash $LC watch $W/data $W/work_refine
sleep 60
for r in base nomem refine; do echo "== $r"; grep -E "Iter\(train\)" $W/work_$r/part1.log | tail -1 | cut -c1-300; tail -2 $W/work_$r/part1.log | cut -c1-300; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
