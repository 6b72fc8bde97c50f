"""WaymoTrackOccDataset: indexing, clips, packed output, clear errors, dataloader from config."""
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from trackocc.datasets import WaymoTrackOccDataset
from trackocc.datasets.transforms import LoadPanopticOccupancy
from trackocc.structures import CAMERA_FOLDERS, CAMERA_NAMES, OCC_DIR

init_default_scope('trackocc')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CAMS = list(CAMERA_NAMES)
DATA_CONFIG = dict(input_size=(64, 160), resize=(-0.06, 0.11), rot=(-5.4, 5.4), flip=True,
                   crop_h=(0.0, 0.0), resize_test=0.0)


def prefixes(split='training'):
    return dict(pts='kitti_format/training/velodyne', occ=f'{OCC_DIR}/{split}',
                **{cam: f'kitti_format/training/{CAMERA_FOLDERS[cam]}' for cam in CAMS})


def frame_pipeline(train=True):
    steps = [dict(type='LoadMultiViewImages', cams=CAMS),
             dict(type='MultiViewImageAugmentation', data_config=DATA_CONFIG, is_train=train)]
    if train:
        steps += [dict(type='LoadLiDARPoints', coord_type='LIDAR', load_dim=6, use_dim=3),
                  dict(type='PointsToMultiViewDepth', depth_range=(0.5, 60.0))]
    steps.append(dict(type='LoadPanopticOccupancy', thing_classes=[1, 2, 4]))
    keys = ('img', 'gt_occ', 'gt_depth') if train else ('img', 'gt_occ')
    return [dict(type='TransformBroadcaster', share_random_params=True, transforms=steps),
            dict(type='PackTrackOccInputs', keys=keys)]


def make_dataset(root, train=True, pipeline=None, **kwargs):
    split = 'train' if train else 'val'
    return WaymoTrackOccDataset(
        data_root=root, ann_file=f'kitti_format/waymo_infos_{split}_jpg.pkl',
        data_prefix=prefixes('training' if train else 'validation'),
        pipeline=frame_pipeline(train) if pipeline is None else pipeline,
        test_mode=not train, **kwargs)


def test_clips_stay_inside_sequences(tiny_data_root):
    ds = make_dataset(tiny_data_root, pipeline=[])
    # train seqs: 6 and 4 frames -> 4 + 2 clips of 3 consecutive frames
    assert len(ds) == 6
    for idx in range(len(ds)):
        frames = ds.get_item_frames(idx)
        infos = [ds.get_frame_info(i) for i in frames]
        assert len({info['sequence_id'] for info in infos}) == 1
        assert np.all(np.diff([info['frame_idx'] for info in infos]) == 1)
    assert ds.item_sequence_ids.tolist() == [0, 0, 0, 0, 1, 1]
    assert ds.item_positions.tolist() == [0, 1, 2, 3, 0, 1]
    # items are clips, frames are indexed apart: 10 kept frames, 6 clips
    assert ds.num_frames == 10 and ds.get_frame_info(9)['sample_idx'] == 1003
    with pytest.raises(IndexError, match='frame index 10 outside'):
        ds.get_frame_info(10)
    # load_interval 2 keeps frames 0, 2, 4 of seq 0 and 0, 2 of seq 1 -> one clip
    ds2 = make_dataset(tiny_data_root, pipeline=[], load_interval=2)
    assert len(ds2) == 1
    assert [ds2.get_frame_info(i)['frame_idx'] for i in ds2.get_item_frames(0)] == [0, 2, 4]
    # clip_stride / frame_interval / sequences / clip length
    ds3 = make_dataset(tiny_data_root, pipeline=[], clip_stride=2, sequences=[0])
    assert [ds3.get_item_frames(i) for i in range(len(ds3))] == [[0, 1, 2], [2, 3, 4]]
    ds4 = make_dataset(tiny_data_root, pipeline=[], frame_interval=2, num_frames_per_sample=2)
    frames = [[ds4.get_data_info(i)['sample_idx'] for i in ds4.get_item_frames(j)]  # mmengine name
              for j in range(len(ds4))]
    assert frames == [[0, 2], [1, 3], [2, 4], [3, 5], [1000, 1002], [1001, 1003]]
    with pytest.raises(ValueError, match='clip of 7 frames'):
        make_dataset(tiny_data_root, pipeline=[], num_frames_per_sample=7)
    with pytest.raises(ValueError, match='load_interval'):
        make_dataset(tiny_data_root, pipeline=[], load_interval=0)


def test_stream_order_and_ego_motion(tiny_data_root):
    ds = make_dataset(tiny_data_root, train=False, pipeline=[])
    assert len(ds) == 5
    clips = [ds.get_clip_info(i) for i in range(len(ds))]
    assert [c['frame_idx'][0] for c in clips] == [0, 1, 2, 3, 4]
    assert [c['start_of_sequence'][0] for c in clips] == [True, False, False, False, False]
    assert all(c['sequence_id'][0] == 1000 for c in clips)  # split 1 * 1000 + seq 0
    assert clips[1]['sample_idx'][0] == 1_000_001
    assert clips[1]['timestamp'][0] == pytest.approx(1.5)
    # the ego moves +2 m in x per frame: the current origin is at x=+2 in the previous frame
    # (the model's relative_ego_transform(ego2global_prev, ego2global) maps the other way)
    curr2prev = np.linalg.inv(clips[2]['ego2global'][0]) @ clips[3]['ego2global'][0]
    np.testing.assert_allclose(curr2prev[:3, 3], [2., 0., 0.], atol=1e-9)
    assert clips[2]['occ_path'][0].endswith(osp.join('validation', '000', '002_04.npz'))


def _check_packed(item, num_frames, height, width, with_depth):
    img = item['inputs']['img']
    assert img.dtype == torch.uint8 and tuple(img.shape) == (num_frames, 5, 3, height, width)
    sample = item['data_samples']
    assert type(sample).__name__ == 'ClipDataSample' and len(sample) == num_frames
    for frame in sample.video_data_samples:
        assert type(frame).__name__ == 'OccDataSample'
        assert type(frame.gt_occ).__name__ == 'OccupancyData'
        meta = frame.metainfo
        for key in ('cam2img', 'lidar2cam', 'img_aug_matrix', 'lidar2img'):
            assert meta[key].shape == (5, 4, 4) and meta[key].dtype == np.float32, key
        np.testing.assert_allclose(
            meta['lidar2img'], meta['img_aug_matrix'] @ meta['cam2img'] @ meta['lidar2cam'],
            rtol=1e-4, atol=1e-3)
        assert meta['ego2global'].shape == (4, 4) and meta['ego2global'].dtype == np.float64
        assert meta['img_shape'] == (height, width) and meta['num_views'] == 5
        assert len(meta['ori_shape']) == 5
        assert isinstance(meta['timestamp'], float) and isinstance(meta['sample_idx'], int)
        assert meta['sequence_id'] == meta['sample_idx'] // 1000
        assert meta['frame_idx'] == meta['sample_idx'] % 1000
        occ = frame.gt_occ
        for key in ('semantics', 'instances'):
            assert occ.get(key).dtype == torch.int64 and occ.get(key).shape == (200, 200, 16)
        for key in ('mask_camera', 'mask_lidar', 'infov'):
            assert occ.get(key).dtype == torch.bool and occ.get(key).shape == (200, 200, 16)
        assert occ.instance_ids.dtype == torch.int64 and occ.instance_labels.dtype == torch.int64
        assert occ.instance_ids.shape == occ.instance_labels.shape
        assert set(occ.instance_labels.tolist()) <= {1, 2, 4}
        # sign (3) and other non-thing voxels carry no instance id
        assert not torch.any(occ.instances[~torch.isin(occ.semantics, torch.tensor([1, 2, 4]))])
        # the sizes the losses take from the host, counted in the worker
        counts = occ.metainfo['voxel_counts']
        cam = occ.mask_camera.numpy()
        both = cam & occ.infov.numpy()
        sem, inst = occ.semantics.numpy(), occ.instances.numpy()
        assert counts['visible'] == dict(camera=int(cam.sum()), camera_and_infov=int(both.sum()))
        assert counts['classes'] == dict(camera=tuple(np.unique(sem[cam]).tolist()),
                                         camera_and_infov=tuple(np.unique(sem[both]).tolist()))
        assert counts['instance_voxels'] == tuple(int((inst == i).sum())
                                                  for i in occ.instance_ids.tolist())
        if with_depth:
            depth = frame.gt_depth
            assert depth.dtype == torch.float32 and tuple(depth.shape) == (5, height, width)
            assert depth.max() > 0 and depth.min() >= 0
        else:
            assert 'gt_depth' not in frame


def test_packed_train_clip_tiny(tiny_data_root):
    ds = make_dataset(tiny_data_root)
    item = ds[0]
    _check_packed(item, 3, 64, 160, with_depth=True)
    frames = item['data_samples'].video_data_samples
    # as the original, every frame draws its own image augmentation (draw='per_camera_per_frame')
    for frame in frames[1:]:
        assert not np.allclose(frame.img_aug_matrix, frames[0].img_aug_matrix)
    assert [f.frame_idx for f in frames] == [0, 1, 2]
    occ = frames[0].gt_occ
    assert occ.instance_ids.tolist() == [7, 9] and occ.instance_labels.tolist() == [1, 2]


def test_packed_train_clip_synthetic(synthetic_data_root):
    ds = make_dataset(synthetic_data_root)
    assert len(ds) > 0
    _check_packed(ds[len(ds) - 1], 3, 64, 160, with_depth=True)


def test_packed_test_frames_synthetic(synthetic_data_root):
    ds = make_dataset(synthetic_data_root, train=False)
    items = [ds[i] for i in range(2)]
    for item in items:
        _check_packed(item, 1, 64, 160, with_depth=False)
    first = items[0]['data_samples'].video_data_samples[0]
    assert first.start_of_sequence
    assert not items[1]['data_samples'].video_data_samples[0].start_of_sequence
    # deterministic test-time transform
    again = ds[0]
    assert torch.equal(again['inputs']['img'], items[0]['inputs']['img'])


def test_filter_empty_gt_redraws(tiny_data_root, tmp_path):
    root = str(tmp_path / 'data')
    shutil.copytree(tiny_data_root, root)
    # remove all things from frame 1 of train seq 1: its clip (frames 0-2, 1-3) are redrawn
    path = osp.join(root, 'pano_voxel04', 'training', '001', '001_04.npz')
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays['instances'][:] = 0
    np.savez_compressed(path, **arrays)
    ds = make_dataset(root, filter_empty_gt=True)
    assert ds.prepare_data(4) is None
    assert ds.prepare_data(0) is not None
    np.random.seed(0)
    item = ds[4]  # redraws another clip
    assert item['data_samples'].video_data_samples[0].sequence_id == 0


def test_errors_name_the_file(tiny_data_root, tmp_path):
    root = str(tmp_path / 'data')
    shutil.copytree(tiny_data_root, root)
    # truncated LiDAR file (the training pipeline loads points)
    bin_path = osp.join(root, 'kitti_format', 'training', 'velodyne', '0000001.bin')
    with open(bin_path, 'rb') as f:
        content = f.read()
    with open(bin_path, 'wb') as f:
        f.write(content[:-8])
    with pytest.raises(ValueError, match='0000001.bin'):
        make_dataset(root)[0]
    os.remove(bin_path)
    with pytest.raises(FileNotFoundError, match='0000001.bin'):
        make_dataset(root)[0]
    # truncated pkl
    pkl = osp.join(root, 'kitti_format', 'waymo_infos_train_jpg.pkl')
    with open(pkl, 'rb') as f:
        content = f.read()
    with open(pkl, 'wb') as f:
        f.write(content[:len(content) // 2])
    with pytest.raises(ValueError, match='waymo_infos_train_jpg.pkl'):
        make_dataset(root)
    # missing image
    ds = make_dataset(root, train=False)
    img = osp.join(root, 'kitti_format', 'training', 'image_3', '1000002.jpg')
    os.remove(img)
    with pytest.raises(FileNotFoundError, match='1000002.jpg'):
        ds[2]
    # corrupt npz
    npz = osp.join(root, 'pano_voxel04', 'validation', '000', '001_04.npz')
    with open(npz, 'wb') as f:
        f.write(b'PK\x03\x04 this is not a zip archive')
    with pytest.raises(ValueError, match='001_04.npz'):
        ds[1]
    # truncated npz, and a plain .npy under the npz name
    npz = osp.join(root, 'pano_voxel04', 'validation', '000', '000_04.npz')
    with open(npz, 'rb') as f:
        content = f.read()
    with open(npz, 'wb') as f:
        f.write(content[:len(content) // 2])
    with pytest.raises(ValueError, match='000_04.npz'):
        ds[0]
    with open(npz, 'wb') as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match='000_04.npz'):
        ds[0]
    # npz without a key
    npz = osp.join(root, 'pano_voxel04', 'validation', '000', '003_04.npz')
    np.savez(npz, semantics=np.zeros((200, 200, 16), np.uint8))
    with pytest.raises(ValueError, match=r'003_04.npz.*instances'):
        ds[3]
    # missing pkl
    with pytest.raises(FileNotFoundError, match='nothing.pkl'):
        WaymoTrackOccDataset(data_root=root, ann_file='nothing.pkl', data_prefix=prefixes())


def test_invalid_voxel_labels_are_errors_in_training(tiny_data_root, tmp_path):
    """Labels the losses would silently ignore (class 200) must stop training, naming the file."""
    root = str(tmp_path / 'data')
    shutil.copytree(tiny_data_root, root)
    npz = osp.join(root, 'pano_voxel04', 'training', '000', '001_04.npz')
    with np.load(npz) as f:
        arrays = dict(f)
    visible = arrays['mask_camera'].astype(bool) & arrays['infov']
    bad = dict(arrays, semantics=np.where(visible, 200, arrays['semantics']).astype(np.uint8))
    np.savez_compressed(npz, **bad)
    ds = make_dataset(root)
    with pytest.raises(ValueError, match=r'001_04\.npz: semantics has class ids outside '
                                         r'\[0, 16\): min 200 max 200 \(640000 voxels\)'):
        ds[0]  # clip of frames 0, 1, 2 of train sequence 0
    load = LoadPanopticOccupancy(thing_classes=[1, 2, 4])
    for key, value, message in (
            ('instances', np.full((200, 200, 16), -3, np.int32), 'instances has negative ids'),
            ('mask_camera', np.full((200, 200, 16), 2, np.uint8), 'mask_camera must be bool'),
            ('semantics', np.zeros((200, 200, 16), np.float32), 'semantics dtype float32')):
        np.savez_compressed(npz, **dict(arrays, **{key: value}))
        with pytest.raises(ValueError, match=f'001_04.npz: {message}'):
            load(dict(occ_path=npz))
    np.savez_compressed(npz, **arrays)
    assert ds[0]['data_samples'].video_data_samples[1].gt_occ.semantics.max() < 16


def test_instance_table_counts_boxes_in_train_and_test_mode(tiny_data_root):
    """Det3DDataset logs num_ins_per_cat; the tiny boxes are all 'Car' (occupancy class 1)."""
    train = make_dataset(tiny_data_root, pipeline=[])
    test = make_dataset(tiny_data_root, train=False, pipeline=[])
    assert train.num_ins_per_cat == [0, 3 * 10] + [0] * 14  # 10 train frames, 3 boxes each
    assert test.num_ins_per_cat == [0, 3 * 5] + [0] * 14  # 5 val frames


@pytest.mark.parametrize('config,size', [('synthetic-waymo.py', (256, 704)),
                                         ('waymo-trackocc.py', (256, 704))])
def test_dataloader_from_base_config(synthetic_data_root, config, size):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'datasets', config))
    for name in ('train_dataloader', 'val_dataloader'):
        loader_cfg = cfg[name]
        loader_cfg.num_workers = 0
        loader_cfg.persistent_workers = False
        loader_cfg.dataset.data_root = synthetic_data_root
        loader_cfg.dataset.load_interval = 1  # the generator writes every frame 0.5 s apart
        if name == 'train_dataloader':
            loader_cfg.sampler.seed = 0
        loader = Runner.build_dataloader(loader_cfg, seed=0)
        batch = next(iter(loader))
        assert isinstance(batch['inputs']['img'], list) and len(batch['inputs']['img']) == 1
        num_frames = 3 if name == 'train_dataloader' else 1
        assert tuple(batch['inputs']['img'][0].shape) == (num_frames, 5, 3) + size
        assert len(batch['data_samples'][0]) == num_frames
