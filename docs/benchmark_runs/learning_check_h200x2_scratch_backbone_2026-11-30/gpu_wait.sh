W=/tmp/lc; limit=${1:-540}; t=0
while [ ! -f $W/work/DONE ] && [ $t -lt $limit ]; do sleep 15; t=$((t+15)); done
grep -E "Iter\(train\)" $W/work/part1.log | tail -1 | cut -c1-400; tail -1 $W/work/part1.log | cut -c1-300
grep -E "^iteration|OccSTQ" $W/curve.log | tail -8
[ -f $W/work/DONE ] && echo TRAINING-DONE
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
