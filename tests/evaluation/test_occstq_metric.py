"""OccSTQMetric: reference numbers on the shared vectors through mmengine's Evaluator,
frames over many process() calls, simulated ranks, format-only round trip, CSV."""
import glob
import json
import math
import os
import os.path as osp
import pickle

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('mmdet3d')
from mmdet.structures import TrackDataSample  # noqa: E402
from trackocc.registry import METRICS  # noqa: E402
from mmdet3d.structures import Det3DDataSample  # noqa: E402
from mmengine.evaluator import Evaluator  # noqa: E402
from mmengine.structures import BaseDataElement  # noqa: E402

from trackocc.structures import OccDataSample, OccupancyData  # noqa: E402

from trackocc.evaluation import OccSTQMetric  # noqa: E402
from trackocc.evaluation.functional import OCC_CLASS_NAMES, evaluate_directories  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VECTORS = sorted(glob.glob(osp.join(REPO, 'tests', 'data', 'occstq', 'case_*')))


def frames_of(case):
    """OccDataSamples of a vector case in (sequence, frame) order, as the model returns."""
    out = []
    for path in sorted(glob.glob(osp.join(case, 'gt', 'validation', '*', '*_04.npz'))):
        seq = int(osp.basename(osp.dirname(path)))
        frame = int(osp.basename(path)[:3])
        sample_idx = 1_000_000 + seq * 1000 + frame
        with np.load(path) as g, np.load(osp.join(case, 'pred', f'{sample_idx}.npz')) as p:
            sample = OccDataSample(metainfo=dict(sample_idx=sample_idx,
                                                 sequence_id=1000 + seq, frame_idx=frame))
            sample.gt_occ = OccupancyData(
                semantics=torch.from_numpy(g['semantics'].astype(np.int64)),
                instances=torch.from_numpy(g['instances'].astype(np.int64)),
                mask_camera=torch.from_numpy(g['mask_camera'].astype(bool)),
                infov=torch.from_numpy(g['infov'].astype(bool)))
            sample.pred_occ = OccupancyData(
                semantics=torch.from_numpy(p['pano_sem'].reshape(200, 200, 16).copy()),
                instances=torch.from_numpy(p['pano_inst'].astype(np.int32).reshape(200, 200, 16)))
        out.append(sample)
    return out


def expected_of(case):
    return json.load(open(osp.join(case, 'expected.json')))['expected']


def assert_matches(metrics, expected, prefix='occstq/'):
    for key in ('OccSTQ', 'AQ', 'mIoU'):
        value, ref = metrics[prefix + key], expected[key]
        assert (math.isnan(value) and math.isnan(ref)) or abs(value - ref) <= 1e-9, key
    for cl, name in enumerate(OCC_CLASS_NAMES):
        if cl not in (9, 15):
            assert abs(metrics[f'{prefix}IoU_{name}'] - expected['per_class_iou'][cl]) <= 1e-9


def test_registered():
    metric = METRICS.build(dict(type='OccSTQMetric', settings='strict'))
    assert isinstance(metric, OccSTQMetric) and not metric.settings.skip_instance_id_one


@pytest.mark.parametrize('case', VECTORS, ids=[osp.basename(c) for c in VECTORS])
def test_evaluator_matches_reference(case, tmp_path):
    frames = frames_of(case)
    csv = tmp_path / 'seq.csv'
    evaluator = Evaluator([OccSTQMetric(csv_file=str(csv))])
    evaluator.dataset_meta = dict(classes=list(OCC_CLASS_NAMES))
    # one frame per TrackDataSample, two per batch: sequences span several process() calls
    tracks = [TrackDataSample(video_data_samples=[f]) for f in frames]
    for i in range(0, len(tracks), 2):
        evaluator.process(data_samples=tracks[i:i + 2])
    # only counts are kept: far less than one frame's prediction (640000 voxels)
    assert len(pickle.dumps(evaluator.metrics[0].sequence_states)) < 64_000
    metrics = evaluator.evaluate(len(frames))
    assert_matches(metrics, expected_of(case))
    num_seqs = len({f.sequence_id for f in frames})
    assert len(csv.read_text().strip().splitlines()) == 1 + num_seqs
    assert evaluator.metrics[0].sequence_states == {}  # reset for the next evaluation


def test_ranks_with_split_sequences_merge_exactly():
    case = osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_02')
    frames = frames_of(case)
    ranks = [OccSTQMetric(print_table=False), OccSTQMetric(print_table=False)]
    for i, f in enumerate(frames):  # round robin: every sequence is split across the ranks
        ranks[i % 2].process(None, [f])  # a bare frame is accepted too
    metrics = ranks[0].compute_metrics([r.sequence_states for r in ranks])
    assert_matches(metrics, expected_of(case), prefix='')
    with pytest.raises(ValueError, match='added twice'):
        ranks[0].compute_metrics([ranks[0].sequence_states, ranks[0].sequence_states])


def test_format_only_round_trip(tmp_path):
    case = osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_01')
    out = tmp_path / 'preds'
    metric = OccSTQMetric(format_only=True, outfile_prefix=str(out))
    frames = frames_of(case)
    metric.process(None, [TrackDataSample(video_data_samples=frames[:3]),
                          TrackDataSample(video_data_samples=frames[3:])])
    assert metric.evaluate(1) == {}
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(osp.join(case, 'pred')))
    with np.load(out / names[0]) as mine, np.load(osp.join(case, 'pred', names[0])) as ref:
        assert mine['pano_sem'].dtype == np.uint8 and mine['pano_inst'].dtype == np.int16
        assert mine['pano_sem'].shape == (640000,)
        np.testing.assert_array_equal(mine['pano_inst'], ref['pano_inst'])
    result, _ = evaluate_directories(osp.join(case, 'gt'), str(out))
    assert abs(result['OccSTQ'] - expected_of(case)['OccSTQ']) <= 1e-9


def test_errors():
    with pytest.raises(ValueError, match='outfile_prefix'):
        OccSTQMetric(format_only=True)
    sample = frames_of(osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_03'))[0]
    del sample.pred_occ
    with pytest.raises(KeyError, match='no pred_occ'):
        OccSTQMetric().process(None, [sample])
    # frames must be typed: no plain data element or dict is read field by field
    untyped = Det3DDataSample(metainfo=sample.metainfo)
    untyped.gt_occ = BaseDataElement(**sample.gt_occ.to_dict())
    untyped.pred_occ = BaseDataElement(semantics=sample.gt_occ.semantics.to(torch.uint8),
                                       instances=sample.gt_occ.instances)
    for batch in ([TrackDataSample(video_data_samples=[untyped])], [untyped],
                  [sample.to_dict()]):
        with pytest.raises(TypeError, match='frames must be OccDataSample'):
            OccSTQMetric().process(None, batch)
    with pytest.raises(RuntimeError, match='no frame was processed'):
        OccSTQMetric().evaluate(1)


class _FakeEvent:
    """Stands in for ``torch.cuda.Event`` on the CPU: counts the waits."""
    waits = 0

    def record(self):
        pass

    def synchronize(self):
        _FakeEvent.waits += 1


@pytest.fixture
def overlapped(monkeypatch):
    """Every tensor taken for a device tensor: the metric's queued path runs on the CPU."""
    from trackocc.evaluation.metrics import occstq_metric
    monkeypatch.setattr(occstq_metric, '_on_cuda', lambda v: isinstance(v, torch.Tensor))
    monkeypatch.setattr(occstq_metric.torch.cuda, 'Event', _FakeEvent)
    _FakeEvent.waits = 0
    return occstq_metric


def test_overlapped_copies_count_a_call_later_with_the_same_result(overlapped):
    case = osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_02')
    frames = frames_of(case)
    metric = OccSTQMetric(print_table=False)
    counted = []
    for i, frame in enumerate(frames):
        metric.process(None, [frame])
        counted.append(sum(acc.num_frames for acc in metric.sequence_states.values()))
        assert counted[-1] == i  # this call's frame waits for the next call
    assert _FakeEvent.waits == len(frames) - 1
    assert_matches(metric.evaluate(1), expected_of(case))  # evaluate counts the last one
    assert _FakeEvent.waits == len(frames) and metric._pending == []


def test_overlapped_copies_off_counts_at_once(overlapped):
    frames = frames_of(osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_02'))
    metric = OccSTQMetric(overlap_copies=False)
    metric.process(None, frames[:2])
    assert sum(acc.num_frames for acc in metric.sequence_states.values()) == 2
    assert _FakeEvent.waits == 0


def test_overlapped_copies_errors_name_the_frame_at_the_next_call(overlapped, tmp_path):
    frames = frames_of(osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_02'))
    bad = frames[0]
    bad.pred_occ = OccupancyData(semantics=torch.full_like(bad.pred_occ.semantics, 200),
                                 instances=bad.pred_occ.instances)
    metric = OccSTQMetric()
    metric.process(None, [bad])  # queued: its arrays are only read when counted
    with pytest.raises(ValueError, match=f"sample_idx={bad.metainfo['sample_idx']}.*class ids"):
        metric.process(None, [frames[1]])
    assert metric._pending == []  # the bad frame is not counted again
    # missing fields are still refused at once
    del frames[2].gt_occ
    with pytest.raises(KeyError, match='no gt_occ'):
        metric.process(None, [frames[2]])
    # format_only writes the queued frames in evaluate
    writer = OccSTQMetric(format_only=True, outfile_prefix=str(tmp_path))
    writer.process(None, frames[3:5])
    assert sorted(os.listdir(tmp_path)) == []
    writer.evaluate(1)
    assert len(os.listdir(tmp_path)) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_frames_are_copied_to_pinned_memory_and_counted_the_same():
    case = osp.join(REPO, 'tests', 'data', 'occstq', 'case_0_02')
    results = []
    for overlap in (True, False):
        metric = OccSTQMetric(overlap_copies=overlap, print_table=False)
        for frame in frames_of(case):
            frame.pred_occ = frame.pred_occ.to('cuda')
            frame.gt_occ = frame.gt_occ.to('cuda')
            metric.process(None, [frame])
            if overlap:
                (pending, ) = metric._pending
                assert pending.arrays['pred_sem'].is_pinned()
                assert pending.arrays['gt_sem'].is_pinned()
        results.append(metric.evaluate(1))
    assert results[0] == results[1]
    assert_matches(results[0], expected_of(case))


def test_queued_counts_equal_immediate_ones_in_a_test_stream(overlapped, tmp_path):
    """The tiny model streams a held-out set through ``test_step`` (the test loop's preprocessor
    and ``predict``); a metric that holds each frame until the next call counts what one that
    counts at once does: nothing of a held frame changes while the next one is predicted."""
    from mmengine.dataset import pseudo_collate
    from tiny_held_out import TINY, make_tiny_held_out

    from trackocc.analysis.held_out_stream import build_test_dataset
    from trackocc.analysis.model_setup import build_model, load_config
    root, ckpt = make_tiny_held_out(tmp_path)
    cfg = load_config(TINY)
    model = build_model(cfg, ckpt, 'cpu').eval()
    dataset = build_test_dataset(cfg, root)
    queued, direct = (Evaluator([OccSTQMetric(overlap_copies=overlap, print_table=False)])
                      for overlap in (True, False))
    for i in range(len(dataset)):
        data = pseudo_collate([dataset[i]])
        with torch.no_grad():
            out = model.test_step(data)
        queued.process(out, data)
        direct.process(out, data)
        assert len(queued.metrics[0]._pending) == 1 and not direct.metrics[0]._pending
    a, b = queued.evaluate(len(dataset)), direct.evaluate(len(dataset))
    assert a.keys() == b.keys() and 'occstq/OccSTQ' in a
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a), (a, b)
    assert _FakeEvent.waits == len(dataset)
