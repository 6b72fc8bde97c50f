W=/tmp/lc; limit=${1:-540}; t=0
while [ ! -f $W/work_base/DONE ] && [ $t -lt $limit ]; do sleep 15; t=$((t+15)); done
for r in base nomem refine; do echo "== $r"; grep -E "Iter\(train\)" $W/work_$r/part1.log | tail -1 | cut -c1-330; ls $W/work_$r | grep -E "iter_|DONE" | tr '\n' ' '; echo; grep -E "^iteration|OccSTQ" $W/work_$r/watch.log | tail -4; done
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
