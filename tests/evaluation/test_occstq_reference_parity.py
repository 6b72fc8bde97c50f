"""Random-case parity with the original evaluator, when it is available.

Set ``OCCSTQ_REFERENCE_DIR`` to a scratch folder holding the original ``track_metrics.py``
(loaders/track_metrics.py of Tsinghua-MARS-Lab/TrackOcc; it is not shipped here), e.g.

    mkdir /tmp/occstq_ref && git -C <TrackOcc clone> show HEAD:loaders/track_metrics.py \
        > /tmp/occstq_ref/track_metrics.py
    OCCSTQ_REFERENCE_DIR=/tmp/occstq_ref pytest tests/evaluation/test_occstq_reference_parity.py

Without it the test skips; the shared vectors (test_occstq_vectors.py) are always on.
"""
import contextlib
import importlib.util
import io
import math
import os
import os.path as osp
import sys
import types
import warnings

import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REF_DIR = os.environ.get('OCCSTQ_REFERENCE_DIR', '')


def load_reference():
    path = osp.join(REF_DIR, 'track_metrics.py')
    if not REF_DIR or not osp.isfile(path):
        pytest.skip('OCCSTQ_REFERENCE_DIR with the original track_metrics.py is not set')
    try:
        import pandas  # noqa: F401  (the original imports it for a class we do not use)
    except ImportError:
        sys.modules.setdefault('pandas', types.ModuleType('pandas'))
    spec = importlib.util.spec_from_file_location('original_track_metrics', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_core():
    from trackocc.evaluation import functional
    return functional


def random_sequences(rng, shape=(10, 10, 4)):
    """1-3 sequences of 1-4 frames: ids on every kind of class (shared across classes, id 1,
    tiny tubes), class noise incl. ignored classes, negative and false-positive ids, masks."""
    sequences = []
    n = int(np.prod(shape))
    for _ in range(rng.integers(1, 4)):
        frames = []
        for _ in range(rng.integers(1, 5)):
            gs = rng.integers(0, 16, shape).astype(np.uint8)
            gi = np.zeros(shape, np.int32)
            for gid in range(1, rng.integers(2, 9)):
                vox = rng.choice(n, size=rng.integers(1, 12), replace=False)
                gi.reshape(-1)[vox] = gid
                if rng.random() < 0.7:
                    gs.reshape(-1)[vox] = rng.choice([0, 1, 2, 3, 4, 9])
            ps = gs.copy()
            noise = rng.random(shape) < rng.choice([0.0, 0.1, 0.4])
            ps[noise] = rng.integers(0, 16, int(noise.sum()))
            perm = rng.permutation(12) - rng.integers(0, 3)
            pi = np.where(gi > 0, perm[np.clip(gi, 0, 11)], 0).astype(np.int16)
            fp = rng.random(shape) < 0.03
            pi[fp] = rng.integers(-2, 10, int(fp.sum()))
            pi[rng.random(shape) < 0.1] = 0
            mask = (rng.random(shape) < 0.9) & (rng.random(shape) < 0.95)
            frames.append((ps, pi, gs, gi, mask))
        sequences.append(frames)
    return sequences


def reference_scores(ref, sequences):
    """Drive the original as loaders/track_waymo_occ_dataset.py does: one stacked addBatch
    per sequence with sign (3) gt ids zeroed."""
    with contextlib.redirect_stdout(io.StringIO()):
        ev = ref.OccPanoptic4DEval(n_classes=16, ignore=[9, 15])
        for seq, frames in enumerate(sequences):
            ps, pi, gs, gi, mask = (np.stack(a) for a in zip(*frames))
            gi = gi.copy()
            gi[gs == 3] = 0
            ev.addBatch(seq, ps, pi, gs, gi, mask)
        with np.errstate(all='ignore'), warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)  # its mean of no pairs
            occstq, aq, miou = ev.getPQ4D()
        iou = ev.getSemIoU()[1]
    tubes = np.zeros(16)
    for seq in ev.sequences:
        for cl in ev.include:
            tubes[cl] += len(ev.gts[seq][cl])
    return dict(OccSTQ=occstq, AQ=aq, mIoU=miou, per_class_iou=list(iou),
                per_class_aq=list(ev.pan_aq / np.maximum(tubes, 1e-15)))


def test_random_cases_match_original():
    ref = load_reference()
    core = load_core()
    settings = core.OccSTQSettings()
    rng = np.random.default_rng(2025)
    finite = 0
    for case in range(60):
        sequences = random_sequences(rng)
        expected = reference_scores(ref, sequences)
        stats = []
        for seq, frames in enumerate(sequences):
            acc = core.SequenceAccumulator(seq, settings)
            for i, (ps, pi, gs, gi, mask) in enumerate(frames):
                acc.add_frame(ps, pi, gs, gi, mask, frame_idx=i)
            stats.append(acc.close())
        ours = core.summarize(stats, settings)
        for key, value in expected.items():
            a = np.asarray(ours[key], float)
            e = np.asarray(value, float)
            same = (np.isnan(a) & np.isnan(e)) | (np.abs(a - e) <= 1e-9)
            assert same.all(), f'case {case} {key}: ours {a} original {e}'
        finite += not math.isnan(expected['AQ'])
    assert finite > 40  # the cases exercise AQ, not only the NaN path
