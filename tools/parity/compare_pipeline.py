"""Pipeline part of the parity run: our dataset and transforms (the config's test and train
pipelines) on the dump's data root and frames, against the original pipeline's records.

Training draws (resize, crop, flip, rotation per camera and frame) are replayed from the
dump's ``pipeline/img_augs`` so that the table measures the transforms, not the generator;
whether our generator would draw the same values is reported separately (``draws``).
"""
import contextlib
from typing import Dict, List

import numpy as np
import torch

import compare_tables as ct


def _build_dataset(cfg, which: str, data_root: str):
    from mmdet3d.registry import DATASETS
    loader = cfg.train_dataloader if which == 'train' else cfg.val_dataloader
    ds_cfg = loader.dataset.copy()
    ds_cfg['data_root'] = data_root
    ds_cfg['load_interval'] = 1  # as the dump's run_overrides
    if which == 'train':
        ds_cfg['filter_empty_gt'] = False  # the clip is chosen by sample_idx below
    return DATASETS.build(ds_cfg)


def _find_item(dataset, sample_idx: List[int]) -> int:
    for idx in range(len(dataset)):
        frames = dataset.get_item_frames(idx)
        got = [int(dataset.get_data_info(i)['sample_idx']) for i in frames]
        if got == list(sample_idx):
            return idx
    raise KeyError(f'compare: no item of our {"train" if len(sample_idx) > 1 else "test"} '
                   f'dataset has the frames {sample_idx}')


def _params_from_dump(augs: torch.Tensor) -> List[dict]:
    """(N, 10) resize_w, resize_h, W, H, crop x0, y0, x1, y1, flip, rotation -> our params."""
    out = []
    for row in augs.double().tolist():
        out.append(dict(resize=(row[0], row[1]), resize_dims=(int(row[2]), int(row[3])),
                        crop=tuple(int(v) for v in row[4:8]), flip=bool(row[8]),
                        rotate=float(row[9])))
    return out


@contextlib.contextmanager
def _replayed_draws(queue: List[List[dict]], drawn: List[List[dict]]):
    """MultiViewImageAugmentation.draw_params returns the dump's draws, frame after frame;
    what our generator would have drawn is kept in ``drawn``."""
    from trackocc.datasets.transforms.multiview_augmentation import MultiViewImageAugmentation
    original = MultiViewImageAugmentation.draw_params

    def replay(self, shapes):
        drawn.append(original(self, shapes))
        if not queue:
            raise RuntimeError('compare: more augmentation draws than the dump recorded')
        return queue.pop(0)
    MultiViewImageAugmentation.draw_params = replay
    try:
        yield
    finally:
        MultiViewImageAugmentation.draw_params = original


def _frame_rows(table: ct.Table, t: Dict[str, torch.Tensor], p: str, frame, img: torch.Tensor,
                train: bool):
    """Rows of one frame: normalised image, camera matrices, GT, (depth)."""
    import compare_model
    ref_meta = compare_model.camera_meta(t, p)
    meta = frame.metainfo
    ref_img = t[p + 'input/img'][0]
    row = ct.compare_tensor(p + 'input/img', ref_img, None, img)
    if not row.ok and tuple(img.shape) == tuple(ref_img.shape):
        per_cam = ((img.double() - ref_img.double()).abs() > 1e-4).flatten(1).sum(1).tolist()
        row.note = (f'values differing per camera {per_cam} of {ref_img[0].numel()} '
                    f'(one grey level = {1 / 57.12:.4f})')
    table.rows.append(row)
    for key in ('cam2img', 'lidar2cam', 'img_aug_matrix', 'lidar2img'):
        ours = torch.as_tensor(np.asarray(meta[key], dtype=np.float64))
        ref = torch.as_tensor(ref_meta[key])
        table.rows.append(ct.compare_tensor(f'{p}{key} (from rots/trans/intrins/post_*)', ref,
                                            None, ours))
    occ = frame.gt_occ
    table.rows.append(ct.compare_exact(p + 'input/voxel_semantics',
                                       t[p + 'input/voxel_semantics'][0], occ.semantics))
    table.rows.append(ct.compare_exact(p + 'input/voxel_instances',
                                       t[p + 'input/voxel_instances'][0], occ.instances))
    vis = occ.mask_camera.bool() & occ.infov.bool()
    table.rows.append(ct.compare_exact(p + 'input/visible_mask (mask_camera & infov)',
                                       t[p + 'input/visible_mask'][0], vis))
    table.rows.append(ct.compare_exact(p + 'input/infov_mask', t[p + 'input/infov_mask'][0],
                                       occ.infov))
    if train:
        ref = t[p + 'input/gt_depth'][0]
        ours = frame.gt_depth
        row = ct.compare_tensor(p + 'input/gt_depth', ref, None, ours)
        both = (ref > 0) & (ours > 0)
        far = (ours.double() - ref.double()).abs() > 1e-3
        ties = depth_key_ties(ref, ours)
        # a depth map is a discrete target (which point, which pixel): judged like the
        # streamed voxels, by the share of pixels that differ (a point whose projection sits
        # on a pixel border may round the other way after float noise); pixels where the
        # original's float32 sort key cannot tell the two depths apart are order-undefined
        # there and not counted
        share = float((far & ~ties).double().mean())
        row.ok = share <= 1 - ct.AGREE_TOL
        row.note = (f'pixels with depth: ours {int((ours > 0).sum())}, original '
                    f'{int((ref > 0).sum())}, both {int(both.sum())}; differing by > 1 mm: '
                    f'{int(far.sum())} ({int((far & both).sum())} with depth on both sides, '
                    f'{int((far & ties).sum())} of them sort-key ties of the original; '
                    f'{100 * share:.4f} % differ otherwise)')
        table.rows.append(row)


def depth_key_ties(ref: torch.Tensor, ours: torch.Tensor) -> torch.Tensor:
    """(..., h, w) bool: pixels where both maps hold different depths that the original's
    sort key cannot tell apart.

    The original keeps, per pixel, the first point after sorting by the float32 key
    ``rank + depth / 100`` (rank = row * w + col), with an unstable sort. At the ranks of a
    704-wide image the key's float32 spacing reaches 1/64, i.e. 1.6 m of depth, so points of
    one pixel whose keys round to the same value are kept in an arbitrary order; we keep the
    nearest. Where our depth and the original's have equal keys, both are valid outcomes of
    the original's rule.
    """
    h, w = ref.shape[-2:]
    rank = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    hundred = torch.tensor(100., dtype=torch.float32)
    key_ref = rank + ref.float() / hundred
    key_ours = rank + ours.float() / hundred
    return (ref > 0) & (ours > 0) & (ref.float() != ours.float()) & (key_ref == key_ours)


def pipeline_tables(cfg, dump) -> List[ct.Table]:
    """Test and train pipeline tables."""
    meta, t = dump['meta'], dump['tensors']
    data_root = meta['data_root']
    from mmdet3d.registry import MODELS
    pre = MODELS.build(cfg.model.data_preprocessor)
    tables = []

    test = ct.Table('Pipeline, test frames (our dataset + transforms vs the original\'s)')
    ds = _build_dataset(cfg, 'test', data_root)
    for i, sidx in enumerate(meta['test_sample_idx']):
        item = ds[_find_item(ds, [sidx])]
        data = pre(dict(inputs=[item['inputs']], data_samples=[item['data_samples']]), False)
        frame = data['data_samples'][0].video_data_samples[0]
        _frame_rows(test, t, f'test/f{i}/', frame, data['inputs']['imgs'][0, 0], False)
    tables.append(test)

    train = ct.Table('Pipeline, training clip (augmentation draws replayed from the dump)')
    ds = _build_dataset(cfg, 'train', data_root)
    idx = _find_item(ds, meta['train']['sample_idx'])
    queue = [_params_from_dump(t[f'train/f{i}/pipeline/img_augs']) for i in range(3)]
    drawn: List[List[dict]] = []
    with _replayed_draws(queue, drawn):
        item = ds[idx]
    data = pre(dict(inputs=[item['inputs']], data_samples=[item['data_samples']]), True)
    for i, frame in enumerate(data['data_samples'][0].video_data_samples):
        _frame_rows(train, t, f'train/f{i}/', frame, data['inputs']['imgs'][0, i], True)
    tables.append(train)
    return tables
