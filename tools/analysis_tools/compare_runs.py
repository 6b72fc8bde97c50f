#!/usr/bin/env python
"""Learning-check runs side by side: held-out numbers and merge audit at a common checkpoint.

    python tools/analysis_tools/compare_runs.py OUTDIR [--all] [--csv F] [--json F]
    python tools/analysis_tools/compare_runs.py WORK [WORK ...] [--all] [--csv F] [--json F]

OUTDIR is what ``learning_check.sh ablate`` made: one run per sub-folder, in the order of
``OUTDIR/ablate.tsv`` (without it: every sub-folder holding ``curve/``, by name). A run's
checkpoint ``N`` counts as evaluated once ``learning_check.sh curve`` / ``watch`` has written
``WORK/curve/iter_N/occstq.json`` (``tools/evaluate_predictions.py --json``); its
``merge_audit.json`` (``tools/test.py --merge-audit``) must be there as well.

One row per run at the latest checkpoint evaluated in every run (``--all``: at every such
checkpoint): ``OccSTQ``, ``AQ``, ``mIoU`` and, per thing class, ``IoU``, ``AQ``, gt ``tubes``
and the merge-audit track-frames of the class (``track_frames`` and each fate: ``output``,
``dormant``, ``low_score``, ``empty_mask``, ``overlap``). Fractions as in the JSON files; the
printed tables give percentages. Written as CSV and JSON (default ``OUTDIR/compare.csv`` /
``.json``; for WORKs, in their common parent folder).
"""
import argparse
import csv
import io
import json
import math
import os
import os.path as osp
import re
import sys
from numbers import Real
from typing import Dict, List, Optional, Sequence, Tuple

from trackocc.structures.occ_classes import OCC_CLASS_NAMES, THING_CLASSES
from trackocc.utils.output_files import atomic_write_text, check_output_path

#: the merge audit's fates (``merge_audit_hook.TRACK_FATES``), in its order
FATES = ('output', 'dormant', 'low_score', 'empty_mask', 'overlap')
#: the per-class columns: from occstq.json, then from merge_audit.json
CLASS_KEYS = ('IoU', 'AQ', 'tubes', 'track_frames') + FATES
#: the manifest ``learning_check.sh ablate`` writes in OUTDIR (first column: the run folder)
MANIFEST = 'ablate.tsv'


class CompareError(ValueError):
    """A run folder or one of its files is missing or malformed."""


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)  # NaN allowed: evaluate_predictions writes it
    except FileNotFoundError:
        raise CompareError(f'{path}: file not found') from None
    except ValueError as err:
        raise CompareError(f'{path}: not valid JSON ({err})') from None
    if not isinstance(data, dict):
        raise CompareError(f'{path}: expected a JSON object, got {type(data).__name__}')
    return data


def _number(path: str, where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise CompareError(f'{path}: {where} is {value!r}, expected a number')
    return float(value)


def _count(path: str, where: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CompareError(f'{path}: {where} is {value!r}, expected a count >= 0')
    return value


def find_runs(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """``[(name, work dir)]``: each WORK (a folder with ``curve/``), or the runs of one OUTDIR."""
    for path in paths:
        if not osp.isdir(path):
            raise CompareError(f'{path}: folder not found')
    if len(paths) == 1 and not osp.isdir(osp.join(paths[0], 'curve')):
        outdir = paths[0]
        manifest = osp.join(outdir, MANIFEST)
        if osp.isfile(manifest):
            with open(manifest) as f:
                lines = [line.rstrip('\n') for line in f]
            names = [line.split('\t')[0] for line in lines[1:] if line.strip()]
            if not names:
                raise CompareError(f'{manifest}: no run listed')
            bad = [n for n in names if not n or '/' in n or n in ('.', '..')]
            if bad:
                raise CompareError(f'{manifest}: bad run folder name(s) {bad}')
        else:
            names = sorted(n for n in os.listdir(outdir)
                           if osp.isdir(osp.join(outdir, n, 'curve')))
            if not names:
                raise CompareError(f'{outdir}: neither a work dir (no curve/) nor a folder of '
                                   f'runs ({MANIFEST} or sub-folders with curve/)')
        return [(n, osp.join(outdir, n)) for n in names]
    names = [osp.basename(osp.normpath(p)) for p in paths]
    if len(set(names)) < len(names):  # e.g. a/work and b/work: the paths tell them apart
        names = [osp.normpath(p) for p in paths]
    if len(set(names)) < len(names):
        raise CompareError(f'a run is given twice: {list(paths)}')
    return list(zip(names, paths))


def evaluated_iters(work: str) -> Dict[int, str]:
    """``{N: WORK/curve/iter_N}`` for every checkpoint with an ``occstq.json``."""
    curve = osp.join(work, 'curve')
    if not osp.isdir(curve):
        raise CompareError(f'{curve}: folder not found (no checkpoint of {work} evaluated yet; '
                           f'learning_check.sh curve / watch write it)')
    found = {}
    for name in os.listdir(curve):
        match = re.fullmatch(r'iter_(\d+)', name)
        folder = osp.join(curve, name)
        if match and osp.isfile(osp.join(folder, 'occstq.json')):
            found[int(match.group(1))] = folder
    return found


def class_names_of(path: str, occ: dict) -> List[str]:
    names = occ.get('class_names', (occ.get('settings') or {}).get('class_names'))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CompareError(f'{path}: no class_names list (tools/evaluate_predictions.py '
                           f'--json writes one)')
    return names


def read_occstq(path: str, classes: Sequence[str]) -> dict:
    """``OccSTQ`` / ``AQ`` / ``mIoU``, ``{class: {IoU, AQ, tubes}}`` (``classes``) and every
    class name (``names``) of an occstq.json."""
    occ = _read_json(path)
    row = {}
    for key in ('OccSTQ', 'AQ', 'mIoU'):
        if key not in occ:
            raise CompareError(f'{path}: no {key}')
        row[key] = _number(path, key, occ[key])
    names = class_names_of(path, occ)
    for key in ('per_class_iou', 'per_class_aq', 'num_tubes'):
        values = occ.get(key)
        if not isinstance(values, list) or len(values) != len(names):
            raise CompareError(f'{path}: {key} must be a list of {len(names)} values (one per '
                               f'class name), got {values!r:.80}')
    per_class = {}
    for cls in classes:
        if cls not in names:
            raise CompareError(f'{path}: class {cls!r} not among its class_names {names}')
        i = names.index(cls)
        per_class[cls] = dict(
            IoU=_number(path, f'per_class_iou[{i}]', occ['per_class_iou'][i]),
            AQ=_number(path, f'per_class_aq[{i}]', occ['per_class_aq'][i]),
            tubes=_count(path, f'num_tubes[{i}]', occ['num_tubes'][i]))
    row['classes'] = per_class
    row['names'] = names
    return row


def read_audit(path: str, classes: Sequence[str],
               names: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """``{class: {track_frames, output, ...}}`` of a merge_audit.json; a class the audit does
    not list had no track with an id (all counts 0). ``names``: every class name (the audit's
    classes must be among them)."""
    audit = _read_json(path)
    fates, per_class = audit.get('fates'), audit.get('per_class')
    if not isinstance(fates, list) or not isinstance(per_class, dict):
        raise CompareError(f'{path}: expected the merge audit format (keys fates, per_class; '
                           f'tools/test.py --merge-audit writes it)')
    missing = [f for f in FATES if f not in fates]
    if missing:
        raise CompareError(f'{path}: fates {fates} lack {missing}')
    unknown = [k for k in per_class if k not in names]
    if unknown:
        raise CompareError(f'{path}: per_class has {unknown}, not class names of the '
                           f'evaluation ({list(names)})')
    out = {}
    for cls in classes:
        counts = per_class.get(cls, {})
        if not isinstance(counts, dict):
            raise CompareError(f'{path}: per_class[{cls!r}] is not an object')
        row = {k: _count(path, f'per_class[{cls!r}][{k!r}]', counts.get(k, 0))
               for k in ['track_frames'] + fates}
        if sum(row[f] for f in fates) != row['track_frames']:
            raise CompareError(f'{path}: per_class[{cls!r}]: the fates add up to '
                               f'{sum(row[f] for f in fates)}, not track_frames '
                               f'{row["track_frames"]}')
        out[cls] = {k: row[k] for k in ('track_frames',) + FATES}
    return out


def run_row(name: str, folder: str, it: int, classes: Sequence[str]) -> dict:
    """The row of one run at checkpoint ``it`` (its ``curve/iter_<it>`` folder)."""
    row = dict(run=name, iter=it)
    occ = read_occstq(osp.join(folder, 'occstq.json'), classes)
    audit = read_audit(osp.join(folder, 'merge_audit.json'), classes, occ['names'])
    row.update({k: occ[k] for k in ('OccSTQ', 'AQ', 'mIoU')})
    row['classes'] = {cls: {**occ['classes'][cls], **audit[cls]} for cls in classes}
    return row


def compare(runs: Sequence[Tuple[str, str]], classes: Sequence[str],
            every_common: bool = False) -> Tuple[List[dict], List[str]]:
    """Rows (by checkpoint, then in run order) at the latest checkpoint evaluated in every run
    (``every_common``: at each of them), and notes on checkpoints left out."""
    evaluated = {name: evaluated_iters(work) for name, work in runs}
    common = set.intersection(*(set(its) for its in evaluated.values()))
    if not common:
        listed = '; '.join(f'{name}: {sorted(its) or "none"}' for name, its in evaluated.items())
        raise CompareError(f'no checkpoint evaluated in every run (curve/iter_N/occstq.json: '
                           f'{listed})')
    chosen = sorted(common) if every_common else [max(common)]
    notes = []
    for name, its in evaluated.items():
        later = sorted(i for i in its if i > max(common))
        if later:
            notes.append(f'{name}: iter {", ".join(map(str, later))} evaluated, but not in '
                         f'every run')
    rows = [run_row(name, evaluated[name][it], it, classes) for it in chosen for name, _ in runs]
    return rows, notes


def csv_columns(classes: Sequence[str]) -> List[str]:
    return ['run', 'iter', 'OccSTQ', 'AQ', 'mIoU'] + [f'{cls}_{k}' for cls in classes
                                                      for k in CLASS_KEYS]


def to_csv(rows: List[dict], classes: Sequence[str]) -> str:
    buf = io.StringIO(newline='')
    writer = csv.writer(buf)
    writer.writerow(csv_columns(classes))
    for row in rows:
        cells = [row['run'], row['iter']] + [repr(row[k]) for k in ('OccSTQ', 'AQ', 'mIoU')]
        for cls in classes:
            cells += [repr(v) if isinstance(v, float) else v
                      for v in (row['classes'][cls][k] for k in CLASS_KEYS)]
        writer.writerow(cells)
    return buf.getvalue()


def to_json(rows: List[dict], classes: Sequence[str], runs: Sequence[Tuple[str, str]]) -> str:
    """``runs`` (name and work dir), ``classes``, ``fates`` and ``rows`` (NaN as NaN, as
    tools/evaluate_predictions.py writes it)."""
    return json.dumps(dict(runs=[dict(name=n, work=osp.abspath(w)) for n, w in runs],
                           classes=list(classes), fates=list(FATES), rows=rows),
                      indent=1, allow_nan=True)


def _pct(value: float) -> str:
    return '-' if math.isnan(value) else f'{value * 100:.2f}'


def format_tables(rows: List[dict], classes: Sequence[str]) -> str:
    """Two text tables: the metrics (one line per row) and the merge audit (one line per row
    and class). A class without gt tubes has no AQ: ``-``."""
    width = max(len('run'), *(len(r['run']) for r in rows))
    head = f'{"run":<{width}} {"iter":>6} {"OccSTQ":>7} {"AQ":>6} {"mIoU":>6}'
    head += ''.join(f' {cls + " IoU/AQ":>{max(13, len(cls) + 7)}}' for cls in classes)
    lines = [head]
    for r in rows:
        line = (f'{r["run"]:<{width}} {r["iter"]:>6} {_pct(r["OccSTQ"]):>7} {_pct(r["AQ"]):>6} '
                f'{_pct(r["mIoU"]):>6}')
        for cls in classes:
            c = r['classes'][cls]
            aq = _pct(c['AQ']) if c['tubes'] else '-'
            line += f' {_pct(c["IoU"]) + "/" + aq:>{max(13, len(cls) + 7)}}'
        lines.append(line)
    cw = max(len('class'), *(len(c) for c in classes))
    lines += ['', 'merge audit: track-frames of each predicted thing class by fate',
              f'{"run":<{width}} {"iter":>6} {"class":<{cw}} {"tracks":>7}'
              + ''.join(f' {f:>10}' for f in FATES)]
    for r in rows:
        for cls in classes:
            c = r['classes'][cls]
            lines.append(f'{r["run"]:<{width}} {r["iter"]:>6} {cls:<{cw}} '
                         f'{c["track_frames"]:>7}' + ''.join(f' {c[f]:>10}' for f in FATES))
    return '\n'.join(lines)


def default_out_dir(paths: Sequence[str], runs: Sequence[Tuple[str, str]]) -> str:
    if len(paths) == 1 and not osp.isdir(osp.join(paths[0], 'curve')):
        return paths[0]
    return osp.commonpath([osp.dirname(osp.abspath(w)) for _, w in runs])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('paths', nargs='+', metavar='OUTDIR|WORK',
                        help='the OUTDIR of learning_check.sh ablate, or run work dirs')
    parser.add_argument('--all', action='store_true',
                        help='a row per run at every checkpoint evaluated in every run')
    parser.add_argument('--classes', nargs='+',
                        default=[OCC_CLASS_NAMES[c] for c in THING_CLASSES],
                        help='thing classes to show (default: %(default)s)')
    parser.add_argument('--csv', help='CSV path (default OUTDIR/compare.csv)')
    parser.add_argument('--json', help='JSON path (default OUTDIR/compare.json)')
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.paths)
        out_dir = default_out_dir(args.paths, runs)
        out_csv = check_output_path(args.csv or osp.join(out_dir, 'compare.csv'), '--csv')
        out_json = check_output_path(args.json or osp.join(out_dir, 'compare.json'), '--json')
        rows, notes = compare(runs, args.classes, args.all)
    except (CompareError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for note in notes:
        print(f'note: {note}', file=sys.stderr)
    try:  # written first: a closed stdout does not lose them
        atomic_write_text(out_csv, to_csv(rows, args.classes))
        atomic_write_text(out_json, to_json(rows, args.classes, runs))
    except OSError as err:
        print(f'error: cannot write the comparison: {err}', file=sys.stderr)
        return 2
    iters = sorted({r['iter'] for r in rows})
    what = 'every checkpoint' if args.all else 'the latest checkpoint'
    print(f'{len(runs)} run(s) at {what} evaluated in all of them: iter '
          f'{", ".join(map(str, iters))}')
    print(format_tables(rows, args.classes))
    print(f'written: {out_csv}, {out_json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
