"""Summary of the pole_BALANCE_SEED.json runs of overfit_thin_stuff.py in this folder: per
balance and step, the pole, road and building IoU, mean [min-max] over the seeds, and how many
seeds show the pole at all. Run from this folder: ``python summarize.py > summary.txt``."""
import glob
import json
from collections import defaultdict


def main():
    runs = defaultdict(list)
    for path in sorted(glob.glob('pole*_*.json')):  # pole[HEIGHT]_<stuff balance>_<seed>.json
        with open(path) as f:
            run = json.loads(f.read().strip().splitlines()[-1])
        name, balance, _ = path.split('_')
        runs[(int(name[4:] or 3), float(balance))].append(run)
    for (height, balance), group in sorted(runs.items()):
        print(f'pole of {height} voxel(s), stuff mask_pos_balance {balance}: {len(group)} seeds')
        for i, rec in enumerate(group[0]['rec']):
            row = {k: [run['rec'][i][k] for run in group] for k in ('pole', 'road', 'building')}
            shown = sum(v > 0 for v in row['pole'])
            print(f'  step {rec["step"]:>3}: ' + ' | '.join(
                f'{k} {sum(v) / len(v):.2f} [{min(v):.2f}-{max(v):.2f}]' for k, v in row.items())
                + f' | pole shown {shown}/{len(group)}')


if __name__ == '__main__':
    main()
