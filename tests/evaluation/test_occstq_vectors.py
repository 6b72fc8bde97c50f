"""Parity with the original TrackOcc evaluator on the shared OccSTQ vectors (always on).

tests/data/occstq/<case>/expected.json holds the numbers the original ``OccPanoptic4DEval``
gives for each case; ours must match to 1e-9 through the numpy core and the offline CLI.
"""
import glob
import json
import math
import os.path as osp

import pytest

from trackocc.evaluation import functional

from repo_files import load_module

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VECTORS = sorted(glob.glob(osp.join(REPO, 'tests', 'data', 'occstq', 'case_*')))


def load_tool():
    return load_module(osp.join(REPO, 'tools', 'evaluate_predictions.py'),
                       'evaluate_predictions_tool')


TOOL = load_tool()
CORE = functional  # the numpy OccSTQ core the tool runs


def assert_close(actual, expected, what):
    if isinstance(expected, list):
        assert len(actual) == len(expected), what
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f'{what}[{i}]')
        return
    if math.isnan(expected):
        assert math.isnan(actual), f'{what}: expected NaN, got {actual}'
    else:
        assert abs(actual - expected) <= 1e-9, f'{what}: {actual} != {expected}'


def test_vectors_present():
    assert len(VECTORS) == 4, VECTORS


@pytest.mark.parametrize('case', VECTORS, ids=[osp.basename(c) for c in VECTORS])
def test_core_matches_reference(case):
    expected = json.load(open(osp.join(case, 'expected.json')))['expected']
    for io_workers in (0, 2):  # plain and prefetching reads give the same numbers
        result, stats = CORE.evaluate_directories(osp.join(case, 'gt'), osp.join(case, 'pred'),
                                                  io_workers=io_workers)
        for key in ('OccSTQ', 'AQ', 'mIoU', 'per_class_iou'):
            assert_close(result[key], expected[key], f'{osp.basename(case)} {key}')
    assert result['num_frames'] == len(glob.glob(osp.join(case, 'pred', '*.npz')))


@pytest.mark.parametrize('case', VECTORS, ids=[osp.basename(c) for c in VECTORS])
def test_cli_json_matches_reference(case, tmp_path):
    expected = json.load(open(osp.join(case, 'expected.json')))['expected']
    out = tmp_path / 'result.json'
    csv = tmp_path / 'seqs.csv'
    rc = TOOL.main(['--gt-root', osp.join(case, 'gt'), '--pred-dir', osp.join(case, 'pred'),
                    '--split', 'validation', '--json', str(out), '--csv', str(csv), '--quiet'])
    assert rc == 0
    text = out.read_text()
    result = json.loads(text)
    for key in ('OccSTQ', 'AQ', 'mIoU', 'per_class_iou'):
        assert_close(result[key], expected[key], f'{osp.basename(case)} {key}')
    assert len(result['per_class_iou']) == 16
    if math.isnan(expected['AQ']):
        assert '"AQ": NaN' in text  # NaN written as NaN, not null or a string
    num_seqs = len(glob.glob(osp.join(case, 'gt', 'validation', '*')))
    assert len(csv.read_text().strip().splitlines()) == 1 + num_seqs
