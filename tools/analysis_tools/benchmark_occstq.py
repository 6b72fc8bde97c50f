#!/usr/bin/env python
"""Time the original TrackOcc evaluator and ours on the same generated files.

    python tools/analysis_tools/benchmark_occstq.py --reference-dir /tmp/occstq_ref \
        --frames 16 64

For each frame count it writes one synthetic validation sequence (gt npz tree + saved
predictions) and runs, each in a fresh process:
- ``ours``: ``tools/evaluate_predictions.py`` (streams frames, numpy only);
- ``original``: the original ``OccPanoptic4DEval`` (``track_metrics.py`` from
  Tsinghua-MARS-Lab/TrackOcc, copied by you into ``--reference-dir``; not shipped here) driven
  the way ``loaders/track_waymo_occ_dataset.py`` drives it: all predictions in memory, one
  stacked array per sequence.
It prints wall time (process start to exit; fastest of ``--repeat`` interleaved runs) and
peak RSS of each, their ratios and whether the numbers agree. It asserts nothing. Without
``--reference-dir`` (or env ``OCCSTQ_REFERENCE_DIR``) only ours is timed.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from trackocc.structures import GRID_SHAPE

GRID = GRID_SHAPE
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))


# --------------------------------------------------------------------------- synthetic case
def _box(grid, x0, y0, z0, dx, dy, dz):
    x0, y0 = int(np.clip(x0, 0, GRID[0] - 1)), int(np.clip(y0, 0, GRID[1] - 1))
    return (slice(x0, min(x0 + dx, GRID[0])), slice(y0, min(y0 + dy, GRID[1])),
            slice(z0, min(z0 + dz, GRID[2])))


def make_case(root: str, num_frames: int, seq: int = 0, seed: int = 0) -> tuple:
    """Write one validation sequence: gt under root/gt, predictions under root/pred."""
    rng = np.random.default_rng(seed)
    gt_dir = os.path.join(root, 'gt', 'validation', f'{seq:03d}')
    pred_dir = os.path.join(root, 'pred')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(pred_dir, exist_ok=True)
    static = np.full(GRID, 15, np.uint8)
    static[:, :, 0:2] = 14
    static[:, 80:120, 0:2] = 13
    for _ in range(40):  # buildings, vegetation, poles
        x, y = rng.integers(0, 200, 2)
        cls = rng.choice([10, 11, 6, 12, 5, 7])
        size = (12, 12, 10) if cls == 10 else ((6, 6, 8) if cls == 11 else (1, 1, 8))
        if 78 < y < 122:
            continue
        static[_box(static, x, y, 2, *size)] = cls
    signs = [(int(rng.integers(0, 200)), int(rng.integers(60, 140))) for _ in range(6)]
    agents = []  # (id, class, x, y, vx, vy, size)
    for k in range(40):
        cls = rng.choice([1, 1, 2, 4, 9])
        size = {1: (10, 5, 4), 2: (2, 2, 4), 4: (4, 2, 4), 9: (4, 2, 3)}[int(cls)]
        agents.append([k + 2, int(cls), rng.uniform(0, 200), rng.uniform(82, 118),
                       rng.uniform(-2, 2), rng.uniform(-0.2, 0.2), size])
    yy = np.arange(GRID[1])[None, :, None]
    xx = np.arange(GRID[0])[:, None, None]
    infov = np.broadcast_to(np.abs(yy - 100) < (xx + 20), GRID)
    for f in range(num_frames):
        sem = static.copy()
        inst = np.zeros(GRID, np.int32)
        for i, (x, y) in enumerate(signs):
            sem[_box(sem, x, y, 2, 1, 1, 3)] = 3
            inst[_box(sem, x, y, 2, 1, 1, 3)] = 100 + i
        for a in agents:
            a[2] = (a[2] + a[4]) % 200
            a[3] = float(np.clip(a[3] + a[5], 80, 118))
            sl = _box(sem, a[2], a[3], 2, *a[6])
            sem[sl] = a[1]
            inst[sl] = a[0]
        mask_camera = (rng.random(GRID) < 0.85) | (sem != 15)
        np.savez_compressed(os.path.join(gt_dir, f'{f:03d}_04.npz'), semantics=sem,
                            instances=inst, mask_camera=mask_camera.astype(np.uint8),
                            infov=infov.copy())
        # prediction: class noise, id switches halfway, a few false-positive tracks
        psem = sem.copy()
        noise = rng.random(GRID) < 0.03
        psem[noise] = rng.integers(0, 16, int(noise.sum()))
        pinst = np.where(np.isin(sem, (1, 2, 4)), inst, 0).astype(np.int16)
        if f >= num_frames // 2:
            pinst[pinst % 5 == 0] += 500
        for k in range(3):
            x, y = rng.integers(0, 190, 2)
            psem[_box(psem, x, y, 2, 3, 3, 3)] = 1
            pinst[_box(psem, x, y, 2, 3, 3, 3)] = 900 + k
        sample_idx = 1_000_000 + seq * 1000 + f
        np.savez_compressed(os.path.join(pred_dir, f'{sample_idx}.npz'),
                            pano_sem=psem.reshape(-1), pano_inst=pinst.reshape(-1))
    return os.path.join(root, 'gt'), pred_dir


# --------------------------------------------------------------------------- original driver
def run_reference(gt_root: str, pred_dir: str, ref_dir: str, out_json: str) -> None:
    """The original evaluation flow (track_waymo_occ_dataset.evaluate_voxel_metric): every
    prediction held in memory, each sequence stacked, sign ids zeroed, one addBatch."""
    import contextlib
    import io
    import types
    sys.modules.setdefault('pandas', types.ModuleType('pandas'))  # only its Detail class needs it
    sys.path.insert(0, ref_dir)
    from track_metrics import OccPanoptic4DEval
    results = []
    for path in glob.glob(os.path.join(pred_dir, '*.npz')):
        data = np.load(path)
        results.append(dict(sample_idx=int(os.path.basename(path)[:-4]),
                            pano_sem=data['pano_sem'], pano_inst=data['pano_inst']))
    results.sort(key=lambda r: r['sample_idx'])
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = OccPanoptic4DEval(n_classes=16, ignore=[9, 15])
    sequences = {}
    for r in results:
        sequences.setdefault(r['sample_idx'] % 1_000_000 // 1000, []).append(r)
    for seq, frames in sequences.items():
        arrays = [[], [], [], [], []]
        for r in frames:
            gt = np.load(os.path.join(gt_root, 'validation', f'{seq:03d}',
                                      f'{r["sample_idx"] % 1000:03d}_04.npz'))
            arrays[0].append(r['pano_sem'].reshape(GRID))
            arrays[1].append(r['pano_inst'].reshape(GRID))
            arrays[2].append(gt['semantics'])
            arrays[3].append(gt['instances'])
            arrays[4].append(gt['mask_camera'].astype(bool) & gt['infov'].astype(bool))
        psem, pinst, gsem, ginst, mask = (np.stack(a) for a in arrays)
        ginst[gsem == 3] = 0
        evaluator.addBatch(seq, psem, pinst, gsem, ginst, mask)
    with contextlib.redirect_stdout(io.StringIO()):
        occstq, aq, miou = evaluator.getPQ4D()
    with open(out_json, 'w') as f:
        json.dump(dict(OccSTQ=float(occstq), AQ=float(aq), mIoU=float(miou)), f)


# --------------------------------------------------------------------------- measuring
def measure(cmd: list) -> tuple:
    """Run ``cmd`` in a child of a fresh helper process: (wall s, peak RSS MiB, CPU s)."""
    helper = ('import resource, subprocess, sys, time, json\n'
              't = time.perf_counter(); rc = subprocess.call(sys.argv[1:])\n'
              'wall = time.perf_counter() - t\n'
              'use = resource.getrusage(resource.RUSAGE_CHILDREN)\n'
              'print(json.dumps([wall, use.ru_maxrss, use.ru_utime + use.ru_stime, rc]))\n')
    out = subprocess.run([sys.executable, '-c', helper] + cmd, capture_output=True, text=True)
    wall, rss_kb, cpu, rc = json.loads(out.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed ({rc}):\n{out.stderr[-2000:]}')
    return wall, rss_kb / 1024.0, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, nargs='+', default=[16, 64])
    parser.add_argument('--reference-dir', default=os.environ.get('OCCSTQ_REFERENCE_DIR'),
                        help='folder with the original track_metrics.py')
    parser.add_argument('--workdir', default=None, help='where to write cases (default: tmp)')
    parser.add_argument('--python', default=sys.executable, help='interpreter for both runs')
    parser.add_argument('--repeat', type=int, default=3,
                        help='runs per implementation; the fastest wall time is reported')
    parser.add_argument('--run-reference', nargs=3, metavar=('GT_ROOT', 'PRED_DIR', 'JSON'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_reference:
        run_reference(*args.run_reference[:2], args.reference_dir, args.run_reference[2])
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix='occstq_bench_')
    rows = []
    for n in args.frames:
        case = os.path.join(workdir, f'frames_{n}')
        t = time.perf_counter()
        gt_root, pred_dir = make_case(case, n)
        print(f'generated {n} frames in {time.perf_counter() - t:.1f} s under {case}')
        ours_json = os.path.join(case, 'ours.json')
        ref_json = os.path.join(case, 'reference.json')
        cmds = dict(ours=[args.python, os.path.join(REPO, 'tools', 'evaluate_predictions.py'),
                          '--gt-root', gt_root, '--pred-dir', pred_dir, '--json', ours_json,
                          '--quiet'])
        if args.reference_dir:
            cmds['ref'] = [args.python, os.path.abspath(__file__), '--reference-dir',
                           args.reference_dir, '--run-reference', gt_root, pred_dir, ref_json]
        runs = {key: [] for key in cmds}
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            for key, cmd in cmds.items():
                runs[key].append(measure(cmd))
        row = dict(frames=n)
        for key, results in runs.items():
            # fastest run (least disturbed by other load), largest peak memory
            row[key] = (min(r[0] for r in results), max(r[1] for r in results),
                        min(r[2] for r in results))
            row[key + '_json'] = json.load(open(ours_json if key == 'ours' else ref_json))
        rows.append(row)
    print(f'\n{"frames":>6} {"impl":>9} {"wall s":>8} {"CPU s":>7} {"peak MiB":>9}  '
          f'OccSTQ / AQ / mIoU')
    for row in rows:
        for name, key in (('original', 'ref'), ('ours', 'ours')):
            if key in row:
                res = row[key + '_json']
                print(f'{row["frames"]:>6} {name:>9} {row[key][0]:8.2f} {row[key][2]:7.2f} '
                      f'{row[key][1]:9.1f}  '
                      f'{res["OccSTQ"]:.12f} / {res["AQ"]:.12f} / {res["mIoU"]:.12f}')
        if 'ref' in row:
            diff = max(abs(row['ref_json'][k] - row['ours_json'][k])
                       for k in ('OccSTQ', 'AQ', 'mIoU'))
            print(f'{"":>6} {"ratio":>9} {row["ref"][0] / row["ours"][0]:7.2f}x '
                  f'{row["ref"][2] / row["ours"][2]:6.2f}x '
                  f'{row["ref"][1] / row["ours"][1]:8.2f}x  max |diff| {diff:.2e}')
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        print(f'\nours peak RSS {hi["frames"]} vs {lo["frames"]} frames: '
              f'{hi["ours"][1] / lo["ours"][1]:.2f}x')
        if 'ref' in lo:
            print(f'original peak RSS {hi["frames"]} vs {lo["frames"]} frames: '
                  f'{hi["ref"][1] / lo["ref"][1]:.2f}x')


if __name__ == '__main__':
    main()
