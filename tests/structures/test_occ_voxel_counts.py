"""The ground truth's host-side voxel counts: their values, their checks, and that they stay
with ``gt_occ`` (metainfo) through the moves a batch makes before the detector's loss."""
import numpy as np
import pytest
import torch

from test_clip_data_sample import fake_pinning, no_repr
from trackocc.structures.occ_voxel_counts import (VISIBILITY_RULES, VOXEL_COUNTS_KEY,
                                                  check_voxel_counts, occupancy_voxel_counts)


def random_frame(seed, high_class=16):
    rng = np.random.default_rng(seed)
    shape = (6, 5, 4)
    semantics = rng.integers(0, high_class, shape)
    instances = np.where(rng.random(shape) < 0.3, rng.choice([0, 4, 9, 70], shape), 0)
    return dict(semantics=semantics, instances=instances, mask_camera=rng.random(shape) < 0.6,
                infov=rng.random(shape) < 0.7,
                instance_ids=np.array([9, 4, 5]))  # 5 is listed without a voxel; 70 unlisted


@pytest.mark.parametrize('high_class', [16, 1 << 17])  # a bincount, then np.unique
def test_counts_are_the_arrays_counts(high_class):
    f = random_frame(0, high_class)
    counts = occupancy_voxel_counts(**f)
    masks = dict(camera=f['mask_camera'], camera_and_infov=f['mask_camera'] & f['infov'])
    assert set(masks) == set(VISIBILITY_RULES)
    for rule, mask in masks.items():
        assert counts['visible'][rule] == int(mask.sum())
        assert counts['classes'][rule] == tuple(sorted(set(f['semantics'][mask].tolist())))
    assert counts['instance_voxels'] == tuple(int((f['instances'] == i).sum())
                                              for i in f['instance_ids'])
    assert counts['instance_voxels'][2] == 0
    check_voxel_counts(counts, 3, 'here')
    assert all(type(n) is int for n in counts['instance_voxels'])  # host values, not arrays


def test_an_empty_frame_counts_nothing():
    shape = (2, 2, 2)
    counts = occupancy_voxel_counts(np.zeros(shape, int), np.zeros(shape, int),
                                    np.zeros(shape, bool), np.ones(shape, bool),
                                    np.array([3]))
    assert counts == dict(visible=dict(camera=0, camera_and_infov=0),
                          classes=dict(camera=(), camera_and_infov=()), instance_voxels=(0, ))


@pytest.mark.parametrize('change, message', [
    (lambda c: c.pop('classes'), 'must be a dict with visible, classes and instance_voxels'),
    (lambda c: c['visible'].pop('camera'), r"\['visible'\] must map each of"),
    (lambda c: c.update(instance_voxels=(1, )), '1 instance_voxels for 3 instance_ids'),
    (lambda c: c.update(instance_voxels=3), r"\['instance_voxels'\] must be a tuple of ints"),
])
def test_malformed_counts_are_refused_naming_the_place(change, message):
    counts = occupancy_voxel_counts(**random_frame(1))
    change(counts)
    with pytest.raises(ValueError, match=f'sample 7: .*{message}'):
        check_voxel_counts(counts, 3, 'sample 7')


def test_counts_stay_with_the_ground_truth_through_moves_and_pinning(monkeypatch):
    from trackocc.structures import ClipDataSample, OccDataSample, OccupancyData
    f = random_frame(2)
    gt = OccupancyData(**{k: torch.as_tensor(v) for k, v in f.items()})
    gt.set_metainfo({VOXEL_COUNTS_KEY: occupancy_voxel_counts(**f)})
    frame = OccDataSample()
    frame.gt_occ = gt
    clip = ClipDataSample(metainfo=dict(key_frames_inds=[0]))
    clip.video_data_samples = [frame]
    fake_pinning(monkeypatch)
    with no_repr():
        moved = clip.pin_memory().to('cpu')
    assert moved[0].gt_occ.metainfo[VOXEL_COUNTS_KEY] == occupancy_voxel_counts(**f)
    assert moved[0].gt_occ is not gt
