#!/usr/bin/env python
"""Learning curve of a learning-check run: iteration vs held-out OccSTQ / AQ / mIoU and loss.

    python tools/analysis_tools/learning_curve.py WORK [--out WORK/curve.csv]

Reads what ``tools/analysis_tools/learning_check.sh curve`` leaves in WORK:
``curve/iter_<N>/occstq.json`` (``tools/evaluate_predictions.py`` on the held-out predictions of
``iter_<N>.pth``), optionally ``curve/iter_<N>/diagnostics.json`` (track diagnostics), and the
training scalars of every run in the work dir, ``<timestamp>/vis_data/scalars.json`` (a resumed
run's values replace the ones it logs again). One CSV row per evaluated checkpoint: ``iter``,
``OccSTQ``, ``AQ``, ``mIoU`` (fractions, as the JSON), ``loss`` (the last logged value at or
before ``iter``), ``loss_mean`` (mean of the values logged after the previous row up to
``iter``), and from the diagnostics ``gt_tubes``, ``pred_tracks``, ``id_switches``,
``fragmentations``, ``coverage_mean`` (empty without them), and ``fit_OccSTQ`` / ``fit_AQ`` /
``fit_mIoU`` from ``curve/iter_<N>/fit/occstq.json`` (the same checkpoint scored on training
sequences, ``FIT_SEQS``; empty without it). The table is printed as well.
"""
import argparse
import csv
import glob
import io
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional

from trackocc.evaluation import functional as core
from trackocc.utils.output_files import check_output_path


COLUMNS = ['iter', 'OccSTQ', 'AQ', 'mIoU', 'loss', 'loss_mean', 'gt_tubes', 'pred_tracks',
           'id_switches', 'fragmentations', 'coverage_mean', 'fit_OccSTQ', 'fit_AQ',
           'fit_mIoU']
SCORES = ('OccSTQ', 'AQ', 'mIoU')
DIAG_KEYS = ('gt_tubes', 'pred_tracks', 'id_switches', 'fragmentations', 'coverage_mean')


class CurveError(ValueError):
    """A file of the work dir is missing or malformed."""


def read_losses(work: str) -> Dict[int, float]:
    """``{iteration: loss}`` from every ``<work>/*/vis_data/scalars.json`` in timestamp order.

    Lines without ``loss`` (validation / test) are skipped. A run stopped mid-write may end in a
    cut line: a bad last line is reported on stderr and left out; a bad line elsewhere is an
    error naming the file and line."""
    losses: Dict[int, float] = {}
    for path in sorted(glob.glob(os.path.join(work, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            lines = f.read().splitlines()
        for num, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError('not a JSON object')
            except ValueError as err:
                if num == len(lines):
                    print(f'warning: {path}:{num}: cut last line left out ({err})',
                          file=sys.stderr)
                    continue
                raise CurveError(f'{path}:{num}: not a scalars line ({err})') from None
            if 'loss' in row:
                step = row.get('iter', row.get('step'))
                if not isinstance(step, int):
                    raise CurveError(f'{path}:{num}: loss without an integer iter / step')
                losses[step] = float(row['loss'])
    return losses


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CurveError(f'{path}: file not found') from None
    except ValueError as err:
        raise CurveError(f'{path}: not valid JSON ({err})') from None


def _scores(path: str) -> Dict[str, float]:
    occ = _read_json(path)
    missing = [k for k in SCORES if k not in occ]
    if missing:
        raise CurveError(f'{path}: no {missing}')
    return {k: float(occ[k]) for k in SCORES}


def curve_rows(work: str) -> List[Dict[str, Optional[float]]]:
    """One dict per evaluated checkpoint (:data:`COLUMNS`), sorted by iteration."""
    if not os.path.isdir(work):
        raise CurveError(f'{work}: work dir not found')
    evaluated = {}
    for folder in glob.glob(os.path.join(work, 'curve', 'iter_*')):
        match = re.fullmatch(r'iter_(\d+)', os.path.basename(folder))
        if match and os.path.isdir(folder):
            evaluated[int(match.group(1))] = folder
    if not evaluated:
        raise CurveError(f'{os.path.join(work, "curve")}: no evaluated checkpoint iter_<N>/ '
                         f'(run learning_check.sh curve ROOT WORK)')
    losses = read_losses(work)
    if not losses:
        print(f'warning: no training loss in {work}/*/vis_data/scalars.json; the loss columns '
              f'stay empty', file=sys.stderr)
    logged = sorted(losses)
    rows, previous = [], -1
    for it in sorted(evaluated):
        folder = evaluated[it]
        row: Dict[str, Optional[float]] = {'iter': it}
        row.update(_scores(os.path.join(folder, 'occstq.json')))
        fit_path = os.path.join(folder, 'fit', 'occstq.json')
        fit = _scores(fit_path) if os.path.exists(fit_path) else {}
        row.update({f'fit_{k}': fit.get(k) for k in SCORES})
        upto = [s for s in logged if s <= it]
        window = [losses[s] for s in upto if s > previous]
        row['loss'] = losses[upto[-1]] if upto else None
        row['loss_mean'] = sum(window) / len(window) if window else None
        diag_path = os.path.join(folder, 'diagnostics.json')
        overall = _read_json(diag_path).get('overall', {}) if os.path.exists(diag_path) else {}
        if os.path.exists(diag_path) and not all(k in overall for k in DIAG_KEYS):
            raise CurveError(f'{diag_path}: overall lacks some of {list(DIAG_KEYS)}')
        row.update({k: overall.get(k) for k in DIAG_KEYS})
        rows.append(row)
        previous = it
    return rows


def _cell(value) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def to_csv(rows: List[dict]) -> str:
    buf = io.StringIO(newline='')
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[k]) for k in COLUMNS])
    return buf.getvalue()


def format_rows(rows: List[dict]) -> str:
    def pct(v):
        return '-' if v is None or math.isnan(v) else f'{v * 100:.2f}'

    def num(v, spec='.2f'):
        return '-' if v is None else format(v, spec)

    lines = [f'{"iter":>7} {"OccSTQ":>7} {"AQ":>7} {"mIoU":>7} {"loss":>9} {"loss_mean":>9} '
             f'{"tubes":>6} {"tracks":>6} {"IDsw":>5} {"frag":>5} {"cover":>6}']
    with_fit = any(r['fit_OccSTQ'] is not None for r in rows)
    if with_fit:
        lines[0] += f' {"fit:STQ":>7} {"AQ":>7} {"mIoU":>7}'
    for r in rows:
        lines.append(f'{r["iter"]:>7} {pct(r["OccSTQ"]):>7} {pct(r["AQ"]):>7} '
                     f'{pct(r["mIoU"]):>7} {num(r["loss"]):>9} {num(r["loss_mean"]):>9} '
                     f'{num(r["gt_tubes"], "d"):>6} {num(r["pred_tracks"], "d"):>6} '
                     f'{num(r["id_switches"], "d"):>5} {num(r["fragmentations"], "d"):>5} '
                     f'{num(r["coverage_mean"], ".3f"):>6}')
        if with_fit:
            lines[-1] += ''.join(f' {pct(r["fit_" + k]):>7}' for k in SCORES)
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work', help='work dir of the learning check')
    parser.add_argument('--out', help='CSV path (default WORK/curve.csv)')
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.work, 'curve.csv')
    try:
        check_output_path(out, '--out')
        rows = curve_rows(args.work)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(format_rows(rows))
    try:
        core.atomic_write_text(out, to_csv(rows))
    except OSError as err:
        print(f'error: cannot write {out}: {err}', file=sys.stderr)
        return 2
    print(f'written: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
