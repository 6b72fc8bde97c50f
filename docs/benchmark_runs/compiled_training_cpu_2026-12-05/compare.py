"""Loss and gradient norm of the three runs of run.sh, per iteration (scalars_*.json in the
folder given, default this one)."""
import json
import os.path as osp
import statistics
import sys


def rows(folder, run):
    with open(osp.join(folder, f'scalars_{run}.json')) as f:
        return [r for r in map(json.loads, f) if 'loss' in r]


def main(folder=osp.dirname(osp.abspath(__file__))):
    eager, compiled, fallback = (rows(folder, r) for r in ('eager', 'compiled', 'compiled_fr'))
    print('iter  loss eager / compiled  grad_norm eager / compiled')
    for a, b in list(zip(eager, compiled))[::5] + [(eager[-1], compiled[-1])]:
        print(f"{a['iter']:4d}  {a['loss']:9.3f} / {b['loss']:9.3f}  "
              f"{a['grad_norm']:8.2f} / {b['grad_norm']:8.2f}")
    for lo, hi in ((0, 10), (30, 40)):
        means = [statistics.fmean(r['loss'] for r in run[lo:hi]) for run in (eager, compiled)]
        print(f'mean loss, iterations {lo + 1}-{hi}: eager {means[0]:.3f}, '
              f'compiled {means[1]:.3f}')
    print('with fallback_random, iterations 1-3 (loss, grad_norm): eager / compiled')
    for a, b in zip(eager, fallback):
        print(f"{a['iter']:4d}  {a['loss']:.4f} / {b['loss']:.4f}  "
              f"{a['grad_norm']:.4f} / {b['grad_norm']:.4f}")


if __name__ == '__main__':
    main(*sys.argv[1:])
