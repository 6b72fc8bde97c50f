"""TrackOccDataPreprocessor: stacking, normalization, device moves, batch checks."""
import numpy as np
import pytest
import torch
from mmdet.structures import TrackDataSample
from trackocc.registry import MODELS
from trackocc.structures import ClipDataSample
from mmdet3d.structures import Det3DDataSample
from mmengine.dataset import pseudo_collate
from mmengine.structures import BaseDataElement



def make_item(num_frames=3, num_cams=5, height=8, width=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (num_frames, num_cams, 3, height, width), generator=gen,
                        dtype=torch.uint8)
    frames = []
    for t in range(num_frames):
        frame = Det3DDataSample(metainfo=dict(frame_idx=t, cam2img=np.eye(4)[None]))
        frame.gt_occ = BaseDataElement(semantics=torch.zeros(200, 200, 16, dtype=torch.int64),
                                       instance_ids=torch.tensor([3, 5]))
        frame.gt_depth = torch.ones(num_cams, height, width)
        frames.append(frame)
    sample = TrackDataSample()
    sample.video_data_samples = frames
    return dict(inputs=dict(img=img), data_samples=sample)


def test_preprocessor_stacks_and_normalizes():
    pre = MODELS.build(dict(type='TrackOccDataPreprocessor', mean=[100., 110., 120.],
                            std=[10., 20., 30.]))
    items = [make_item(seed=0), make_item(seed=1)]
    out = pre(pseudo_collate(items), training=True)
    imgs = out['inputs']['imgs']
    assert imgs.dtype == torch.float32 and tuple(imgs.shape) == (2, 3, 5, 3, 8, 12)
    raw = items[1]['inputs']['img'].float()
    expected = (raw - torch.tensor([100., 110., 120.]).view(3, 1, 1)) / torch.tensor(
        [10., 20., 30.]).view(3, 1, 1)
    torch.testing.assert_close(imgs[1], expected)
    samples = out['data_samples']
    assert len(samples) == 2 and isinstance(samples[0], TrackDataSample)
    frame = samples[0].video_data_samples[2]
    assert frame.gt_occ.semantics.shape == (200, 200, 16) and frame.frame_idx == 2
    assert frame.gt_depth.shape == (5, 8, 12)


def test_preprocessor_channel_swap_and_list_inputs():
    pre = MODELS.build(dict(type='TrackOccDataPreprocessor', mean=[0., 0., 0.],
                            std=[1., 1., 1.], rgb_to_bgr=True))
    item = make_item(num_frames=1)
    out = pre(dict(inputs=[item['inputs']], data_samples=[item['data_samples']]))
    torch.testing.assert_close(out['inputs']['imgs'][0], item['inputs']['img'].flip(2).float())


def test_preprocessor_rejects_mixed_clip_shapes():
    pre = MODELS.build(dict(type='TrackOccDataPreprocessor'))
    batch = pseudo_collate([make_item(num_frames=3), make_item(num_frames=1)])
    with pytest.raises(ValueError, match='differ'):
        pre(batch)
    with pytest.raises(ValueError):
        MODELS.build(dict(type='TrackOccDataPreprocessor', bgr_to_rgb=True, rgb_to_bgr=True))


def test_preprocessor_one_clip_is_not_copied_to_be_stacked(monkeypatch):
    # a batch of one clip is a view of it (with the DataLoader's pin_memory, the pinned
    # source of the copy to the device); several clips are stacked
    pre = MODELS.build(dict(type='TrackOccDataPreprocessor'))
    img, other = make_item()['inputs']['img'], make_item(seed=1)['inputs']['img']
    stacks = []
    stack = torch.stack
    monkeypatch.setattr(torch, 'stack', lambda *a, **k: stacks.append(1) or stack(*a, **k))
    one = pre.stack_images([img])
    assert stacks == [] and tuple(one.shape) == (1, ) + tuple(img.shape)
    two = pre.stack_images([img, other])
    assert stacks == [1]
    torch.testing.assert_close(two[:1], one)


@pytest.mark.parametrize('training,move_test_samples,moved', [
    (True, False, True), (False, False, False), (False, True, True)])
def test_preprocessor_moves_samples_in_training_only(training, move_test_samples, moved):
    # the meta device stands in for an accelerator: what moved is on it, what did not is not
    pre = MODELS.build(dict(type='TrackOccDataPreprocessor',
                            move_test_samples=move_test_samples)).to('meta')
    stacked = []  # the images reach stack_images still on the host (its pinned-memory copy)
    stack_images = pre.stack_images
    pre.stack_images = lambda imgs: stacked.extend(i.device.type for i in imgs) or \
        stack_images(imgs)
    out = pre(pseudo_collate([make_item()]), training=training)
    assert stacked == ['cpu']
    assert out['inputs']['imgs'].device.type == 'meta'
    frame = out['data_samples'][0].video_data_samples[0]
    want = 'meta' if moved else 'cpu'
    assert frame.gt_occ.semantics.device.type == want and frame.gt_depth.device.type == want
    assert frame.metainfo['frame_idx'] == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_preprocessor_moves_samples_to_cuda_in_training():
    pre = MODELS.build(dict(type='TrackOccDataPreprocessor')).cuda()
    out = pre(pseudo_collate([make_item()]), training=True)
    assert out['inputs']['imgs'].is_cuda
    frame = out['data_samples'][0].video_data_samples[0]
    assert frame.gt_occ.semantics.is_cuda and frame.gt_depth.is_cuda
    item = make_item()
    out = pre(pseudo_collate([item]))  # testing: the ground truth stays on the host
    frame = out['data_samples'][0].video_data_samples[0]
    assert out['inputs']['imgs'].is_cuda and not frame.gt_occ.semantics.is_cuda
    # the images went through pinned memory, asynchronously: the same values as on the host
    cpu = MODELS.build(dict(type='TrackOccDataPreprocessor'))(pseudo_collate([item]))
    torch.testing.assert_close(out['inputs']['imgs'].cpu(), cpu['inputs']['imgs'])
    pinned = []
    pin_memory = torch.Tensor.pin_memory
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, 'pin_memory',
                      lambda self, *a, **k: pinned.append(tuple(self.shape)) or
                      pin_memory(self, *a, **k))
        pre(pseudo_collate([item]))
    assert pinned == [(1, ) + tuple(item['inputs']['img'].shape)]
    # pinned already (the DataLoader's pin_memory=True): not pinned again, same values
    pinned.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.Tensor, 'pin_memory',
                      lambda self, *a, **k: pinned.append(tuple(self.shape)) or
                      pin_memory(self, *a, **k))
        from_pinned = pre(dict(inputs=dict(img=[pin_memory(item['inputs']['img'])]),
                               data_samples=[item['data_samples']]))
    assert pinned == []
    torch.testing.assert_close(from_pinned['inputs']['imgs'].cpu(), cpu['inputs']['imgs'])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_pinned_training_batch_reaches_the_gpu_without_a_host_wait():
    """A training batch as the DataLoader's ``pin_memory=True`` gives it (images and ground
    truth pinned through ``ClipDataSample.pin_memory``) is moved with no host
    synchronisation; a plain copy of its ground truth would wait."""
    from trackocc.structures.clip_data_sample import pin_data
    pre = MODELS.build(dict(type='TrackOccDataPreprocessor')).cuda()
    item = make_item()
    batch = pseudo_collate([item])
    batch['data_samples'] = [ClipDataSample.from_track_sample(item['data_samples'])]
    pinned = pin_data(batch)
    frame = pinned['data_samples'][0].video_data_samples[2]
    assert pinned['inputs']['img'][0].is_pinned() and frame.gt_depth.is_pinned()
    assert frame.gt_occ.semantics.is_pinned() and frame.gt_occ.instance_ids.is_pinned()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        out = pre(pinned, training=True)
        with pytest.raises(RuntimeError, match='synchroniz'):  # the check can fail
            item['data_samples'].video_data_samples[0].gt_depth.to('cuda')
    finally:
        torch.cuda.set_sync_debug_mode('default')
    moved = out['data_samples'][0].video_data_samples[2]
    assert moved.gt_occ.semantics.is_cuda and moved.gt_depth.is_cuda
    assert torch.equal(moved.gt_occ.semantics.cpu(), frame.gt_occ.semantics)
    assert torch.equal(moved.gt_depth.cpu(), frame.gt_depth)
    host = MODELS.build(dict(type='TrackOccDataPreprocessor'))(pseudo_collate([item]), True)
    torch.testing.assert_close(out['inputs']['imgs'].cpu(), host['inputs']['imgs'])
