"""Summarise nb_<balance>_<seed>.json (in this folder, or FOLDER [PATTERN]: e.g. the
center-prior runs' cp_*.json): per setting (balance, and the prior's sigma where a run has
one) and checkpoint, over seeds and frames."""
import glob
import json
import os.path as osp
import statistics as st
import sys
from collections import defaultdict

here = sys.argv[1] if len(sys.argv) > 1 else osp.dirname(osp.abspath(__file__))
pattern = sys.argv[2] if len(sys.argv) > 2 else 'nb_*.json'
runs = defaultdict(list)
for path in sorted(glob.glob(osp.join(here, pattern))):
    with open(path) as f:  # the result line; mmengine may warn on stdout before it
        lines = [line for line in f if line.startswith('{')]
    if not lines:
        print(f'{osp.basename(path)}: no result (still running?)')
        continue
    run = json.loads(lines[-1])
    runs[(run['balance'], run.get('sigma'))].append(run)
for balance, sigma in sorted(runs, key=lambda k: (k[0], k[1] or 0)):
    seeds = runs[(balance, sigma)]
    prior = '' if sigma is None else f' center prior sigma {sigma}' if sigma else ' no prior'
    print(f'balance {balance}{prior} runs {len(seeds)}')
    for i, rec in enumerate(seeds[0]['rec']):
        frames = [fr for run in seeds for fr in run['rec'][i]['frames']]
        best = [b for fr in frames for b in fr['best']]
        sep = [fr['separated'] for fr in frames]
        print(f"  step {rec['step']:3d}: ped IoU {st.mean(best):.2f} | peds matched (>=0.5) by "
              f"distinct tracks {st.mean(sep):.2f} of 3 [{min(sep)}-{max(sep)}] | all 3 apart "
              f"{sum(s == 3 for s in sep)}/{len(sep)} frames | tracks on peds "
              f"{st.mean(fr['tracks_on_peds'] for fr in frames):.2f} | smear voxels "
              f"{st.mean(fr['smear'] for fr in frames):.1f} | loss "
              f"{st.mean(run['rec'][i]['loss'] for run in seeds):.2f}")
