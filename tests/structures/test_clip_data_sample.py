"""ClipDataSample: mmdet's TrackDataSample without the repr its frames setter builds."""
import pickle
from unittest import mock

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample, TrackDataSample

from trackocc.structures import ClipDataSample


def frames(n=2):
    out = []
    for t in range(n):
        f = DetDataSample(metainfo=dict(frame_idx=t))
        f.gt_depth = torch.full((2, 3), float(t))
        out.append(f)
    return out


def no_repr():
    """Fail the test if any data sample is formatted."""
    return mock.patch.object(DetDataSample, '__repr__',
                             side_effect=AssertionError('a frame was formatted'))


def test_frames_set_moved_and_copied_without_formatting_a_frame():
    with no_repr():
        clip = ClipDataSample(metainfo=dict(key_frames_inds=[0, 1]))
        clip.video_data_samples = frames()
        moved = clip.to('cpu')
        copies = (clip.clone(), clip.new(), clip.cpu(), moved)
    for c in copies:
        assert type(c) is ClipDataSample
        assert [f.frame_idx for f in c.video_data_samples] == [0, 1]
        assert torch.equal(c[1].gt_depth, torch.full((2, 3), 1.0))
        assert c.key_frames_inds == [0, 1]
    assert len(clip) == 2


def test_same_fields_and_keys_as_mmdet_track_sample():
    ours, theirs = ClipDataSample(), TrackDataSample()
    ours.video_data_samples = frames()
    theirs.video_data_samples = frames()
    assert ours.keys() == theirs.keys() == ['video_data_samples']
    assert pickle.loads(pickle.dumps(ours))[0].frame_idx == 0
    # a single frame is wrapped, like the parent does
    one = ClipDataSample(video_data_samples=frames(1)[0])
    assert len(one) == 1 and isinstance(one.video_data_samples, list)


@pytest.mark.parametrize('bad', [[], [torch.zeros(1)], 'frames'])
def test_wrong_frames_name_the_problem(bad):
    with pytest.raises(TypeError, match='ClipDataSample: video_data_samples'):
        ClipDataSample().video_data_samples = bad


def test_from_track_sample_keeps_everything_and_formats_nothing():
    theirs = TrackDataSample(metainfo=dict(key_frames_inds=[0, 1], ref_frames_inds=[]))
    theirs.video_data_samples = frames()
    with no_repr():
        ours = ClipDataSample.from_track_sample(theirs)
    assert type(ours) is ClipDataSample and ours.metainfo == theirs.metainfo
    assert ours.video_data_samples[1] is theirs.video_data_samples[1]
    assert ClipDataSample.from_track_sample(ours) is ours


def test_data_preprocessor_moves_mmdet_track_samples_without_formatting():
    from trackocc.models.data_preprocessors import TrackOccDataPreprocessor
    theirs = TrackDataSample()
    theirs.video_data_samples = frames()
    batch = dict(inputs=dict(img=[torch.zeros(2, 1, 3, 4, 5, dtype=torch.uint8)]),
                 data_samples=[theirs])
    with no_repr():
        out = TrackOccDataPreprocessor()(batch, training=True)
        (clip, ) = out['data_samples']
        assert type(clip) is ClipDataSample
        assert torch.equal(clip[0].gt_depth, torch.zeros(2, 3))
        assert out['inputs']['imgs'].shape == (1, 2, 1, 3, 4, 5)
        # testing: the samples are not moved, so they pass through as they came
        assert TrackOccDataPreprocessor()(batch)['data_samples'][0] is theirs


def fake_pinning(monkeypatch):
    """``Tensor.pin_memory`` / ``is_pinned`` on a machine without an accelerator: a pinned
    tensor is a copy whose id is recorded."""
    pinned = {}

    def pin(self, *args, **kwargs):
        copy = self.clone()
        pinned[id(copy)] = copy
        return copy

    monkeypatch.setattr(torch.Tensor, 'pin_memory', pin)
    monkeypatch.setattr(torch.Tensor, 'is_pinned', lambda self, *a, **k: id(self) in pinned)
    return pinned


def occupancy_clip():
    from trackocc.structures import OccupancyData
    clip = ClipDataSample(metainfo=dict(key_frames_inds=[0, 1]))
    out = frames()
    for t, frame in enumerate(out):
        frame.gt_occ = OccupancyData(semantics=torch.full((2, 2, 2), t, dtype=torch.int64),
                                     mask_camera=torch.ones(2, 2, 2, dtype=torch.bool),
                                     instance_ids=torch.tensor([t + 3]))
        frame.set_metainfo(dict(ego2global=np.eye(4), scene='s'))
    clip.video_data_samples = out
    return clip


def tensors(value, path='clip'):
    """{path: tensor} of every tensor in a data element, list or dict."""
    from mmengine.structures import BaseDataElement
    if isinstance(value, torch.Tensor):
        return {path: value}
    found = {}
    items = (value.items() if isinstance(value, (BaseDataElement, dict)) else
             enumerate(value) if isinstance(value, (list, tuple)) else ())
    for key, item in items:
        found.update(tensors(item, f'{path}.{key}'))
    return found


def test_pin_memory_pins_every_tensor_of_every_frame(monkeypatch):
    clip = occupancy_clip()
    pinned = fake_pinning(monkeypatch)
    with no_repr():
        out = clip.pin_memory()
    before, after = tensors(clip), tensors(out)
    assert len(before) == 8 and before.keys() == after.keys()
    for path, tensor in after.items():
        assert id(tensor) in pinned, path
        assert id(before[path]) not in pinned, path  # the clip itself is left alone
        assert torch.equal(tensor, before[path]) and tensor.dtype == before[path].dtype
    assert type(out) is ClipDataSample and out.key_frames_inds == [0, 1]
    assert type(out[0].gt_occ).__name__ == 'OccupancyData'
    assert out[1].scene == 's' and np.array_equal(out[1].ego2global, np.eye(4))
    # pinned tensors are not pinned again
    again = tensors(out.pin_memory())
    assert all(again[p] is after[p] for p in after) and len(pinned) == len(after)


def test_the_dataloader_pin_thread_pins_the_clip(monkeypatch):
    """``DataLoader(pin_memory=True)`` hands each collated batch to this function in its
    pin-memory thread: it calls the clip's ``pin_memory``."""
    from torch.utils.data._utils.pin_memory import pin_memory
    pinned = fake_pinning(monkeypatch)
    batch = dict(inputs=[dict(img=torch.zeros(2, 1, 3, 4, 4, dtype=torch.uint8))],
                 data_samples=[occupancy_clip()])
    out = pin_memory(batch)
    assert id(out['inputs'][0]['img']) in pinned
    assert all(id(t) in pinned for t in tensors(out['data_samples'][0]).values())
