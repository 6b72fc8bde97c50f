import json,glob,statistics as st
rows={}
for f in sorted(glob.glob('ped_*.json')):
    d=json.load(open(f)); rows.setdefault(d['balance'],[]).append(d)
for b, runs in sorted(rows.items()):
    print('balance', b, 'runs', len(runs))
    for i, step in enumerate([25,50,75,100,125,150,175,200]):
        ped=[st.mean(r['rec'][i]['ped']) for r in runs]; veh=[st.mean(r['rec'][i]['veh']) for r in runs]
        found=sum(1 for r in runs for v in r['rec'][i]['ped'] if v>0)
        print(f'  step {step}: ped IoU {st.mean(ped):.2f} [{min(ped):.2f}-{max(ped):.2f}] frames>0 {found}/{3*len(runs)} | veh {st.mean(veh):.2f} [{min(veh):.2f}-{max(veh):.2f}] loss {st.mean(r["rec"][i]["loss"] for r in runs):.2f}')
