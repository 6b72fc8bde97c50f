W=/tmp/lc; limit=${1:-540}; t=0
while [ $t -lt $limit ] && ! { [ -f $W/work_base/DONE ] && [ -f $W/work_mpb05/DONE ] && [ -f $W/work_mpb05b2/DONE ]; }; do sleep 10; t=$((t+10)); done
for r in base mpb05 mpb05b2; do echo "== $r"; grep -E "Iter\(train\)" $W/work_$r/part1.log | tail -1 | cut -c1-200; ls $W/work_$r | grep -E "iter_|DONE" | tr '\n' ' '; echo; grep -E "^iteration|OccSTQ" $W/work_$r/watch.log | tail -4 | cut -c1-200; done
