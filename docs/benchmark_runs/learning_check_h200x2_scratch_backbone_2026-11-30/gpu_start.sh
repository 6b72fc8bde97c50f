# On the GPU machine after `gpu_env.sh install`: private code copy, CUDA ops, data, DDP training
# in the background, and a watcher that evaluates each new checkpoint on GPU 0 (learning_check.sh curve).
set -u
. /tmp/gpu_env
W=/tmp/lc; mkdir -p $W
ITERS=${ITERS:-1300}; EVERY=${EVERY:-325}
rm -rf /tmp/snap && mkdir -p /tmp/snap
tar --exclude=./.gpuwheels --exclude=./.git -cf - . | tar -xf - -C /tmp/snap
cd /tmp/snap
export PYTHONPATH=/tmp/snap:${PYTHONPATH:-} PYTHONUNBUFFERED=1
(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 python setup.py build_ext --inplace > $W/build.log 2>&1; echo "build rc=$?" >> $W/build.log) &
WORKERS=24 bash tools/analysis_tools/learning_check.sh data $W/data > $W/data.log 2>&1; echo "data rc=$?"
wait; tail -1 $W/build.log; tail -3 $W/data.log
python -c "import trackocc.ops as o, torch; print('ops', o.__file__, torch.cuda.device_count())"
date +%T > $W/train_start
GPUS=2 PREEMPT=0 CKPT_EVERY=$EVERY KEEP_CKPTS=-1 bash tools/analysis_tools/learning_check.sh train $W/data $W/work $ITERS
setsid nohup bash -c "n0=0; while true; do
  n=\$(ls $W/work/iter_*.pth 2>/dev/null | wc -l)
  if [ \$n -gt \$n0 ]; then n0=\$n; CUDA_VISIBLE_DEVICES=0 GPUS=1 TEST_WORKERS=6 bash tools/analysis_tools/learning_check.sh curve $W/data $W/work >> $W/curve.log 2>&1; fi
  [ -f $W/work/DONE ] && break; sleep 15; done; echo watcher-done >> $W/curve.log" > /dev/null 2>&1 < /dev/null &
sleep 45; grep -E "Iter\(train\)" $W/work/part1.log | tail -2 | cut -c1-300; tail -3 $W/work/part1.log | cut -c1-300
