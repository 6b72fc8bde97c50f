"""Validation of a TrackOcc-Waymo data root (released or synthetic), used by
``tools/create_data.py check``.

The validated readers (``read_info_pkl``, ``read_occ_npz``, ``read_points_bin``,
``read_image``) raise :class:`DataFileError` naming the file and the problem; the dataset may
use them too. :func:`check_data_root` walks both splits and collects every problem.
"""
import os
import pickle
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..structures.cameras import CAMERA_FOLDERS, CAMERA_NAMES
from ..structures.occ_classes import INSTANCE_CLASSES, NUM_CLASSES, THING_CLASSES
from ..structures.occ_grid import GRID_SHAPE, voxel_centres
from ..structures.occ_npz import GT_KEYS, OCC_DIR, OccFileError, load_gt_frame, occ_file_path
from ..structures.sample_index import INFO_FILES, SPLITS, split_sample_idx
from .image_integrity import CorruptImageError, decode_checked, jpeg_structure_problem


class DataFileError(Exception):
    """A data file is missing or malformed; ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason):
        super().__init__(f'{path}: {reason}')
        self.path = str(path)
        self.reason = reason


@dataclass
class Problem:
    path: str
    reason: str

    def __str__(self):
        return f'{self.path}: {self.reason}'


@dataclass
class CheckReport:
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    num_frames: int = 0
    num_sequences: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# ----------------------------------------------------------------------------- readers
def read_info_pkl(path):
    """Load an info pkl -> dict(metainfo=..., data_list=[...])."""
    if not os.path.isfile(path):
        raise DataFileError(path, 'info file does not exist')
    try:
        with open(path, 'rb') as f:
            data = pickle.load(f)
    except Exception as e:  # truncated or not a pickle
        raise DataFileError(path, f'cannot unpickle ({type(e).__name__}: {e}); file truncated '
                                  'or corrupt') from None
    if not isinstance(data, dict) or not isinstance(data.get('data_list'), list):
        raise DataFileError(path, 'expected dict(metainfo=..., data_list=[...]) (mmdet3d 1.x '
                                  f'info format), got {type(data).__name__}'
                                  + (f' with keys {sorted(data)}' if isinstance(data, dict)
                                     else ''))
    if not isinstance(data.get('metainfo', {}), dict):
        raise DataFileError(path, 'metainfo is not a dict')
    return data


def read_occ_npz(path):
    """Load and validate a ``pano_voxel04`` npz -> dict of the 5 arrays (as stored).

    :func:`trackocc.structures.occ_npz.load_gt_frame` with the loading transform's checks;
    its :class:`OccFileError` comes out as :class:`DataFileError`."""
    if not os.path.isfile(path):
        raise DataFileError(path, 'voxel label file does not exist')
    try:
        return load_gt_frame(path, GRID_SHAPE, GT_KEYS, NUM_CLASSES, check_crc=True)
    except OccFileError as e:
        raise DataFileError(e.path, e.reason) from None


def read_points_bin(path, num_feats=6):
    """Load a LiDAR ``.bin`` -> float32 (N, num_feats)."""
    if not os.path.isfile(path):
        raise DataFileError(path, 'point file does not exist')
    size = os.path.getsize(path)
    if size == 0 or size % (4 * num_feats):
        raise DataFileError(path, f'size {size} bytes is not a positive multiple of '
                                  f'{4 * num_feats} (float32 x {num_feats} per point)')
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, num_feats)
    if not np.isfinite(pts[:, :3]).all():
        raise DataFileError(path, 'non-finite point coordinates')
    return pts


def read_image(path, decode=True):
    """Check a JPEG -> (H, W). ``decode=True`` decodes it (libjpeg damage warnings are
    errors); ``decode=False`` only reads the start and end markers and the frame header."""
    if not os.path.isfile(path):
        raise DataFileError(path, 'image does not exist')
    with open(path, 'rb') as f:
        data = f.read()
    problem = jpeg_structure_problem(data)
    if problem:
        raise DataFileError(path, problem)
    if decode:
        import cv2
        try:
            img = decode_checked(
                lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), data)
        except CorruptImageError as e:
            raise DataFileError(path, e.reason) from None
        if img is None:
            raise DataFileError(path, 'JPEG cannot be decoded')
        return img.shape[:2]
    hw = _jpeg_size(data)
    if hw is None:
        raise DataFileError(path, 'JPEG has no frame header (SOF)')
    return hw


def _jpeg_size(data):
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], 'big')
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int.from_bytes(data[i + 5:i + 7], 'big'),
                    int.from_bytes(data[i + 7:i + 9], 'big'))
        i += 2 + length
    return None


# ----------------------------------------------------------------------------- info fields
def _matrix(value, shapes):
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if m.shape not in shapes or not np.isfinite(m).all():
        return None
    return m


def _pad4(m):
    """A 3x3 / 3x4 / 4x4 matrix in the top-left of a 4x4 identity."""
    out = np.eye(4)
    out[:m.shape[0], :m.shape[1]] = m
    return out


def _invertible(m, rcond=1e-9):
    """Whether a square matrix is numerically invertible (smallest / largest singular
    value above ``rcond``)."""
    s = np.linalg.svd(m, compute_uv=False)
    return s[0] > 0 and s[-1] / s[0] > rcond


def check_frame_info(info, split_id):
    """Problems (list of str) with the fields of one ``data_list`` entry."""
    errs = []
    idx = info.get('sample_idx') if isinstance(info, dict) else None
    if not isinstance(info, dict):
        return [f'entry is a {type(info).__name__}, not a dict']
    if not isinstance(idx, (int, np.integer)) or idx < 0:
        return [f'sample_idx missing or not a non-negative int: {idx!r}']
    if split_sample_idx(idx).split_id != split_id:
        errs.append(f'sample_idx {idx}: split digit {split_sample_idx(idx).split_id} != '
                    f'{split_id}')
    if not isinstance(info.get('timestamp'), (int, np.integer)):
        errs.append(f'timestamp missing or not an int (microseconds): {info.get("timestamp")!r}')
    e2g = _matrix(info.get('ego2global'), [(4, 4)])
    if e2g is None:
        errs.append('ego2global missing or not a finite 4x4 matrix')
    elif np.abs(e2g[:3, :3] @ e2g[:3, :3].T - np.eye(3)).max() > 1e-3:
        errs.append('ego2global rotation is not orthonormal')
    lp = info.get('lidar_points')
    if not isinstance(lp, dict) or not isinstance(lp.get('lidar_path'), str):
        errs.append('lidar_points.lidar_path missing')
    images = info.get('images')
    if not isinstance(images, dict):
        return errs + ['images missing']
    for cam in CAMERA_NAMES:
        ci = images.get(cam)
        if not isinstance(ci, dict):
            errs.append(f'images.{cam} missing')
            continue
        if not isinstance(ci.get('img_path'), str):
            errs.append(f'images.{cam}.img_path missing')
        k = _matrix(ci.get('cam2img'), [(3, 3), (3, 4), (4, 4)])
        l2c = _matrix(ci.get('lidar2cam'), [(4, 4)])
        if k is None:
            errs.append(f'images.{cam}.cam2img missing or not a finite 3x3/3x4/4x4 matrix')
        elif k[0, 0] <= 0 or k[1, 1] <= 0:
            errs.append(f'images.{cam}.cam2img has non-positive focal lengths')
        if l2c is None:
            errs.append(f'images.{cam}.lidar2cam missing or not a finite 4x4 matrix')
        elif not _invertible(l2c):
            errs.append(f'images.{cam}.lidar2cam is singular (the model inverts it)')
        if k is not None and not _invertible(_pad4(k)):
            errs.append(f'images.{cam}.cam2img is singular (the model inverts it)')
        if k is not None and l2c is not None and ci.get('lidar2img') is not None:
            l2i = _matrix(ci['lidar2img'], [(3, 4), (4, 4)])
            if l2i is None or np.abs((_pad4(k) @ l2c)[:3] - l2i[:3]).max() > 1e-2 * max(
                    1.0, np.abs(l2i).max()):
                errs.append(f'images.{cam}.lidar2img != cam2img @ lidar2cam')
    insts = info.get('cam_sync_instances', [])
    if not isinstance(insts, list):
        errs.append('cam_sync_instances is not a list')
    else:
        for n, inst in enumerate(insts):
            box = inst.get('bbox_3d') if isinstance(inst, dict) else None
            if box is None or len(box) != 7 or not np.isfinite(np.asarray(box, float)).all():
                errs.append(f'cam_sync_instances[{n}].bbox_3d is not 7 finite numbers')
    return errs


def cam_matrices(info):
    """-> list of (cam name, lidar2img 4x4) of a frame (cam2img padded to 4x4)."""
    out = []
    for cam in CAMERA_NAMES:
        ci = info['images'][cam]
        k4 = _pad4(np.asarray(ci['cam2img'], np.float64))
        out.append((cam, k4 @ np.asarray(ci['lidar2cam'], np.float64)))
    return out


def projects_into_images(info, sizes, mask):
    """Fraction of the voxels in ``mask`` whose centre projects inside some camera image."""
    centres = voxel_centres(np.argwhere(mask))
    if len(centres) == 0:
        return 1.0
    pts = np.concatenate([centres, np.ones((len(centres), 1))], 1)
    hit = np.zeros(len(centres), bool)
    for cam, l2i in cam_matrices(info):
        h, w = sizes[cam]
        p = pts @ l2i.T
        ok = p[:, 2] > 1e-3
        u = p[:, 0] / np.where(ok, p[:, 2], 1)
        v = p[:, 1] / np.where(ok, p[:, 2], 1)
        hit |= ok & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    return float(hit.mean())


# ----------------------------------------------------------------------------- walker
def _check_occ_content(path, occ, id_class, report):
    """Instance / class consistency of one frame; updates the sequence's id -> class map."""
    sem, ins = occ['semantics'], occ['instances']
    has = ins > 0
    pairs = np.unique(ins[has].astype(np.int64) * NUM_CLASSES + sem[has])
    ids, classes = pairs // NUM_CLASSES, pairs % NUM_CLASSES
    uniq, counts = np.unique(ids, return_counts=True)
    for i in uniq[counts > 1]:
        report.problems.append(Problem(path, f'instance id {i} spans classes '
                                             f'{sorted(classes[ids == i].tolist())}'))
    for i, c in zip(ids.tolist(), classes.tolist()):
        if c not in INSTANCE_CLASSES:
            report.problems.append(Problem(path, f'instance id {i} on class {c}, which has no '
                                                 f'instances (only {INSTANCE_CLASSES})'))
        elif id_class.setdefault(i, c) != c:
            report.problems.append(Problem(path, f'instance id {i} changes class from '
                                                 f'{id_class[i]} to {c} within the sequence'))
    bare = int((np.isin(sem, THING_CLASSES) & ~has).sum())
    if bare:
        report.warnings.append(Problem(path, f'{bare} thing-class voxels without instance id'))


def _check_frame_files(root, split_name, info, sizes_ok, id_class, decode, report):
    kitti = os.path.join(root, 'kitti_format')
    idx = info['sample_idx']
    _, seq, frame = split_sample_idx(idx)
    sizes = {}
    for cam in CAMERA_NAMES:
        ci = info['images'][cam]
        path = os.path.join(kitti, 'training', CAMERA_FOLDERS[cam], ci['img_path'])
        try:
            hw = read_image(path, decode)
        except DataFileError as e:
            report.problems.append(Problem(e.path, e.reason))
            continue
        sizes[cam] = hw
        if ci.get('height') is not None and ci.get('width') is not None and \
                (ci['height'], ci['width']) != tuple(hw):
            report.problems.append(Problem(path, f'image is {hw[1]}x{hw[0]} but the info says '
                                                 f'{ci["width"]}x{ci["height"]}'))
    lidar_path = info['lidar_points']['lidar_path']
    pts_path = os.path.join(kitti, 'training', 'velodyne', lidar_path)
    base = os.path.splitext(os.path.basename(lidar_path))[0]
    if base != f'{idx:07d}':
        report.problems.append(Problem(pts_path, f'file name does not match sample_idx {idx} '
                                                 '(the voxel labels are found from it)'))
    try:
        read_points_bin(pts_path, int(info['lidar_points'].get('num_pts_feats') or 6))
    except DataFileError as e:
        report.problems.append(Problem(e.path, e.reason))
    occ_path = occ_file_path(os.path.join(root, OCC_DIR), split_name, seq, frame)
    try:
        occ = read_occ_npz(occ_path)
    except DataFileError as e:
        report.problems.append(Problem(e.path, e.reason))
        return None
    _check_occ_content(occ_path, occ, id_class, report)
    if sizes_ok and len(sizes) == len(CAMERA_NAMES):
        visible = occ['mask_camera'].astype(bool) & occ['infov'].astype(bool)
        frac = projects_into_images(info, sizes, visible)
        things = visible & np.isin(occ['semantics'], THING_CLASSES)
        frac_things = projects_into_images(info, sizes, things)
        if frac < 0.95 or frac_things < 0.95:
            report.problems.append(Problem(occ_path, (
                f'only {frac:.1%} of the camera-visible in-FOV voxels ({frac_things:.1%} of the '
                'thing voxels) project into a camera image: calibration, infov and mask_camera '
                'disagree')))
    return occ_path, global_centroids(occ, info)


def global_centroids(occ, info):
    """{instance id: (3,) global centroid} of the thing instances of a frame."""
    ins = occ['instances'].astype(np.int64)
    keep = (ins > 0) & np.isin(occ['semantics'], THING_CLASSES)
    ids, inverse = np.unique(ins[keep], return_inverse=True)
    if len(ids) == 0:
        return {}
    xyz = voxel_centres(np.argwhere(keep))
    sums = np.zeros((len(ids), 3))
    np.add.at(sums, inverse, xyz)
    cen = sums / np.bincount(inverse)[:, None]
    e2g = np.asarray(info['ego2global'], np.float64)
    cen = cen @ e2g[:3, :3].T + e2g[:3, 3]
    return dict(zip(ids.tolist(), cen))


def _check_id_jumps(prev, cur, dt, report):
    """An instance id must not jump farther than a fast, partly seen object could move."""
    (_, prev_cen), (path, cur_cen) = prev, cur
    limit = 50.0 * dt + 20.0
    for i in set(prev_cen) & set(cur_cen):
        jump = float(np.linalg.norm(cur_cen[i] - prev_cen[i]))
        if jump > limit:
            report.problems.append(Problem(path, (
                f'instance id {i} jumps {jump:.1f} m (global) in {dt:.2f} s: one id on two '
                'objects?')))


def check_data_root(root, load_interval=1, decode_images=True, every=1, check_projection=True,
                    progress=False):
    """Validate a TrackOcc-Waymo data root -> :class:`CheckReport`.

    Args:
        root: directory holding ``kitti_format/`` and ``pano_voxel04/``.
        load_interval: only frames with ``frame % load_interval == 0`` need files (the released
            data ships images of every 5th frame: use 5 there; synthetic data: 1).
        decode_images: fully decode every JPEG (else header and end marker only).
        every: check the files of one kept frame in ``every`` (pkl fields are always checked).
        check_projection: check that camera-visible in-FOV voxels project into the images.
    """
    report = CheckReport()
    if not os.path.isdir(root):
        report.problems.append(Problem(root, 'data root does not exist'))
        return report
    bar = None
    for split_id, split_name in enumerate(SPLITS):
        fname = INFO_FILES[split_id]
        path = os.path.join(root, 'kitti_format', fname)
        try:
            data = read_info_pkl(path)
        except DataFileError as e:
            report.problems.append(Problem(e.path, e.reason))
            continue
        seqs = defaultdict(list)
        seen = set()
        for n, info in enumerate(data['data_list']):
            errs = check_frame_info(info, split_id)
            for e in errs:
                report.problems.append(Problem(f'{path} data_list[{n}]', e))
            if errs:
                continue
            idx = int(info['sample_idx'])
            if idx in seen:
                report.problems.append(Problem(f'{path} data_list[{n}]',
                                               f'duplicate sample_idx {idx}'))
                continue
            seen.add(idx)
            seqs[split_sample_idx(idx).seq].append(info)
        if not data['data_list']:
            report.warnings.append(Problem(path, 'data_list is empty'))
        report.num_sequences += len(seqs)
        if progress and bar is None:
            try:
                from tqdm import tqdm
                bar = tqdm(desc='check', unit='frame')
            except ImportError:
                pass
        for seq, infos in sorted(seqs.items()):
            infos.sort(key=lambda i: i['sample_idx'])
            for a, b in zip(infos[:-1], infos[1:]):
                if b['timestamp'] <= a['timestamp']:
                    report.problems.append(Problem(
                        path, f'timestamps not increasing at sample_idx {b["sample_idx"]}'))
                dt = max((b['timestamp'] - a['timestamp']) * 1e-6, 1e-3)
                step = np.linalg.norm(np.asarray(b['ego2global'])[:3, 3] -
                                      np.asarray(a['ego2global'])[:3, 3])
                if step / dt > 60:
                    report.problems.append(Problem(path, (
                        f'ego moves {step:.1f} m in {dt:.2f} s before sample_idx '
                        f'{b["sample_idx"]}: ego2global inconsistent')))
            kept = [i for i in infos
                    if split_sample_idx(i['sample_idx']).frame % load_interval == 0]
            id_class, prev = {}, None
            for info in kept[::max(1, every)]:
                cur = _check_frame_files(root, split_name, info, check_projection, id_class,
                                         decode_images, report)
                if cur is not None and prev is not None:
                    dt = max((info['timestamp'] - prev[0]) * 1e-6, 1e-3)
                    _check_id_jumps(prev[1], cur, dt, report)
                prev = (info['timestamp'], cur) if cur is not None else None
                report.num_frames += 1
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    if report.num_frames == 0:
        report.problems.append(Problem(root, 'no frame was checked: the info files list no '
                                             'usable frame (empty data set?)'))
    return report
