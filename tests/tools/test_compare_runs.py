"""tools/analysis_tools/compare_runs.py (``learning_check.sh compare``): learning-check runs
side by side, on small run folders whose occstq.json / merge_audit.json come from the real
writers (tools/evaluate_predictions.py --json, MergeAudit.summary)."""
import copy
import csv
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

from trackocc.engine.hooks.merge_audit_hook import TRACK_FATES, MergeAudit
from trackocc.structures.occ_classes import OCC_CLASS_NAMES

from repo_files import REPO, load_module

TOOL = load_module('tools/analysis_tools/compare_runs.py', 'compare_runs_tool_t')
EVALUATE = load_module('tools/evaluate_predictions.py', 'evaluate_predictions_tool_cr')
SCRIPT = osp.join(REPO, 'tools', 'analysis_tools', 'learning_check.sh')
GRID = (200, 200, 16)
VEHICLE, PEDESTRIAN, CYCLIST = 1, 2, 4


@pytest.fixture(scope='module')
def occstq(tmp_path_factory):
    """The occstq.json of one held-out frame (a car on a road, predicted exactly), as
    tools/evaluate_predictions.py --json writes it."""
    root = tmp_path_factory.mktemp('eval')
    sem = np.full(GRID, 15, np.uint8)
    sem[:, :, 0] = 13
    inst = np.zeros(GRID, np.int16)
    sem[10:14, 10:12, 1:3], inst[10:14, 10:12, 1:3] = VEHICLE, 7
    folder = root / 'gt' / 'validation' / '000'
    folder.mkdir(parents=True)
    np.savez_compressed(folder / '000_04.npz', semantics=sem, instances=inst.astype(np.int32),
                        mask_camera=np.ones(GRID, np.uint8), infov=np.ones(GRID, bool))
    (root / 'pred').mkdir()
    np.savez_compressed(root / 'pred' / '1000000.npz', pano_sem=sem.reshape(-1),
                        pano_inst=inst.reshape(-1))
    out = root / 'occstq.json'
    assert EVALUATE.main(['--gt-root', str(root / 'gt'), '--pred-dir', str(root / 'pred'),
                          '--quiet', '--json', str(out)]) == 0
    return json.loads(out.read_text())


def write_checkpoint(work, it, base, score, fates=None, audit=True):
    """WORK/curve/iter_<it>/: occstq.json (``base`` with OccSTQ / AQ / mIoU = ``score``, vehicle
    IoU / AQ = score / 2) and merge_audit.json (``fates``: {class id: {fate: track-frames}})."""
    folder = work / 'curve' / f'iter_{it}'
    folder.mkdir(parents=True)
    occ = copy.deepcopy(base)
    occ.update(OccSTQ=score, AQ=score, mIoU=score)
    occ['per_class_iou'][VEHICLE] = occ['per_class_aq'][VEHICLE] = score / 2
    (folder / 'occstq.json').write_text(json.dumps(occ, indent=1, allow_nan=True))
    if audit:
        merge = MergeAudit(OCC_CLASS_NAMES)
        merge.frames = 10
        for label, counts in (fates or {}).items():
            merge.fates[label].update(counts)
            merge.voxels_end_as[label][label] += counts.get('overlap', 0)
        (folder / 'merge_audit.json').write_text(json.dumps(merge.summary(), indent=2))
    return folder


@pytest.fixture
def outdir(tmp_path, occstq):
    """Three runs; the manifest lists them base, nomem, another (not in name order). Iteration
    20 is the latest evaluated in all; base has 30 as well; another's 30 is being evaluated
    (no occstq.json yet)."""
    out = tmp_path / 'ablate'
    fates = {VEHICLE: dict(output=6, low_score=1, overlap=2),
             PEDESTRIAN: dict(empty_mask=5, dormant=1)}
    for name, scores in (('base', (0.125, 0.25, 0.5)), ('nomem', (0.0625, 0.125)),
                         ('another', (0.25, 0.375))):
        for it, score in zip((10, 20, 30), scores):
            write_checkpoint(out / name, it, occstq, score, fates if it == 20 else None)
    (out / 'another' / 'curve' / 'iter_30' / 'preds').mkdir(parents=True)
    (out / 'ablate.tsv').write_text('run\tconfig\tgpu\twatch_gpu\titers\n'
                                    'base\tc/base.py\t0\t0\t30\nnomem\tc/nomem.py\t1\t1\t30\n'
                                    'another\tc/another.py\t0\t0\t30\n')
    return out


def test_fates_are_the_merge_audit_ones():
    assert TOOL.FATES == tuple(TRACK_FATES.values())


def test_latest_common_checkpoint(outdir, capsys):
    assert TOOL.main([str(outdir)]) == 0
    cap = capsys.readouterr()
    assert 'base: iter 30 evaluated, but not in every run' in cap.err
    assert 'another' not in cap.err  # its iter_30 has no occstq.json yet
    with open(outdir / 'compare.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['run'], r['iter']) for r in rows] == [('base', '20'), ('nomem', '20'),
                                                     ('another', '20')]
    assert [float(r['OccSTQ']) for r in rows] == [0.25, 0.125, 0.375]
    assert [float(r['vehicle_AQ']) for r in rows] == [0.125, 0.0625, 0.1875]
    base = rows[0]
    assert base['vehicle_tubes'] == '1' and base['pedestrian_tubes'] == '0'
    assert (base['vehicle_track_frames'], base['vehicle_output'], base['vehicle_low_score'],
            base['vehicle_overlap']) == ('9', '6', '1', '2')
    assert (base['pedestrian_track_frames'], base['pedestrian_empty_mask'],
            base['pedestrian_dormant']) == ('6', '5', '1')
    assert base['cyclist_track_frames'] == '0'  # no cyclist track: not in the audit
    assert list(rows[0]) == TOOL.csv_columns(['vehicle', 'pedestrian', 'cyclist'])
    result = json.loads((outdir / 'compare.json').read_text())
    assert [r['name'] for r in result['runs']] == ['base', 'nomem', 'another']
    assert result['rows'][0]['classes']['pedestrian']['empty_mask'] == 5
    assert result['fates'] == list(TOOL.FATES)
    lines = cap.out.splitlines()
    assert lines[0] == '3 run(s) at the latest checkpoint evaluated in all of them: iter 20'
    base_line = next(line for line in lines if line.startswith('base '))
    # OccSTQ, AQ, mIoU in %, vehicle IoU/AQ, pedestrian without tubes: no AQ
    assert base_line.split() == ['base', '20', '25.00', '25.00', '25.00', '12.50/12.50',
                                 '0.00/-', '0.00/-']
    audit_line = next(line for line in lines if line.split()[:3] == ['base', '20', 'vehicle'])
    assert audit_line.split()[3:] == ['9', '6', '0', '1', '0', '2']


def test_every_common_checkpoint_and_work_dirs(outdir, tmp_path, capsys):
    csv_path = tmp_path / 'cmp' / 'all.csv'
    assert TOOL.main([str(outdir / 'nomem'), str(outdir / 'base'), '--all',
                      '--csv', str(csv_path)]) == 0
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [(r['run'], r['iter']) for r in rows] == [('nomem', '10'), ('base', '10'),
                                                     ('nomem', '20'), ('base', '20')]
    assert (outdir / 'compare.json').exists()  # default: the WORKs' parent folder
    assert not (outdir / 'compare.csv').exists()
    assert 'iter 10, 20' in capsys.readouterr().out


def test_without_manifest_runs_by_name(outdir, capsys):
    (outdir / 'ablate.tsv').unlink()
    (outdir / 'not_a_run').mkdir()
    assert TOOL.main([str(outdir), '--classes', 'vehicle']) == 0
    with open(outdir / 'compare.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['run'] for r in rows] == ['another', 'base', 'nomem']
    assert 'pedestrian_IoU' not in rows[0]


def expect_error(capsys, args, *fragments):
    assert TOOL.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err


def test_missing_and_malformed_files(outdir, tmp_path, capsys):
    folder = outdir / 'nomem' / 'curve' / 'iter_20'
    expect_error(capsys, [tmp_path / 'none'], f'{tmp_path}/none: folder not found')
    (tmp_path / 'empty').mkdir()
    expect_error(capsys, [tmp_path / 'empty'], f'{tmp_path}/empty: neither a work dir')
    expect_error(capsys, [outdir, '--classes', 'truck'], "class 'truck' not among")
    audit = (folder / 'merge_audit.json').read_text()
    (folder / 'merge_audit.json').unlink()
    expect_error(capsys, [outdir], f'{folder}/merge_audit.json: file not found')
    summary = json.loads(audit)
    summary['per_class']['vehicle']['output'] += 1
    (folder / 'merge_audit.json').write_text(json.dumps(summary))
    expect_error(capsys, [outdir], f'{folder}/merge_audit.json', 'add up to 10, not '
                 'track_frames 9')
    unnamed = MergeAudit()  # no class names: the audit's classes are numbers
    unnamed.fates[VEHICLE].update(output=1)
    (folder / 'merge_audit.json').write_text(json.dumps(unnamed.summary()))
    expect_error(capsys, [outdir], "per_class has ['1'], not class names")
    (folder / 'merge_audit.json').write_text('[]')
    expect_error(capsys, [outdir], 'merge_audit.json: expected a JSON object, got list')
    (folder / 'merge_audit.json').write_text(audit)
    occ = json.loads((folder / 'occstq.json').read_text())
    (folder / 'occstq.json').write_text('{"OccSTQ": 0.1')
    expect_error(capsys, [outdir], f'{folder}/occstq.json: not valid JSON')
    for key, value, fragment in (('AQ', None, 'no AQ'), ('mIoU', 'high', "mIoU is 'high'"),
                                 ('num_tubes', [1, 2], 'num_tubes must be a list of 16')):
        bad = dict(occ)
        if value is None:
            del bad[key]
        else:
            bad[key] = value
        (folder / 'occstq.json').write_text(json.dumps(bad))
        expect_error(capsys, [outdir], f'{folder}/occstq.json: {fragment}')


def test_no_common_checkpoint(tmp_path, occstq, capsys):
    write_checkpoint(tmp_path / 'a', 10, occstq, 0.5)
    write_checkpoint(tmp_path / 'b', 20, occstq, 0.5)
    (tmp_path / 'c' / 'curve').mkdir(parents=True)
    expect_error(capsys, [tmp_path / 'a', tmp_path / 'b'],
                 'no checkpoint evaluated in every run', 'a: [10]; b: [20]')
    expect_error(capsys, [tmp_path / 'a', tmp_path / 'c'], 'c: none')
    (tmp_path / 'd').mkdir()
    expect_error(capsys, [tmp_path / 'a', tmp_path / 'd'], f'{tmp_path}/d/curve: folder not')


def test_learning_check_compare(outdir):
    cmd = ['bash', SCRIPT, 'compare', str(outdir), '--all']
    dry = subprocess.run(cmd, env=dict(os.environ, DRY_RUN='1'), capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0 and dry.stdout.split()[1:] == [
        'tools/analysis_tools/compare_runs.py', str(outdir), '--all']
    assert not (outdir / 'compare.csv').exists()
    done = subprocess.run(cmd, env=dict(os.environ, PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'iter 10, 20' in done.stdout and (outdir / 'compare.csv').exists()
    bad = subprocess.run(['bash', SCRIPT, 'compare', str(outdir / 'x')],
                         env=dict(os.environ, PYTHON=sys.executable), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and 'x: folder not found' in bad.stderr
