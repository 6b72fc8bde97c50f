"""Table of the ped_*.json results of overfit_small_masks.py (run in this folder)."""
import glob
import json
import statistics as st

runs_by_balance = {}
for path in sorted(glob.glob('ped_*.json')):
    with open(path) as f:
        run = json.load(f)
    runs_by_balance.setdefault(run['balance'], []).append(run)
for balance, runs in sorted(runs_by_balance.items()):
    print('balance', balance, 'runs', len(runs))
    for i, rec in enumerate(runs[0]['rec']):
        ped = [st.mean(r['rec'][i]['ped']) for r in runs]
        veh = [st.mean(r['rec'][i]['veh']) for r in runs]
        found = sum(1 for r in runs for v in r['rec'][i]['ped'] if v > 0)
        loss = st.mean(r['rec'][i]['loss'] for r in runs)
        print(f"  step {rec['step']}: ped IoU {st.mean(ped):.2f} [{min(ped):.2f}-{max(ped):.2f}] "
              f'frames>0 {found}/{3 * len(runs)} | veh {st.mean(veh):.2f} '
              f'[{min(veh):.2f}-{max(veh):.2f}] loss {loss:.2f}')
