"""Occupancy ``.npz`` files: where they lie, which arrays they hold, the one reader and the
prediction writer. numpy only.

Ground truth (``pano_voxel04/<split>/<seq:03d>/<frame:03d>_04.npz``): ``semantics``,
``instances``, ``mask_camera``, ``mask_lidar``, ``infov``, each (200, 200, 16).
Predictions (``<pred_dir>/<sample_idx>.npz``): ``pano_sem`` uint8 and ``pano_inst`` int16,
flat (640000,) in the C order of the grid (what the original's ``format_results`` writes).
"""
import glob
import io
import os
import struct
import zipfile
import zlib
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..utils.output_files import atomic_write
from .occ_classes import NUM_CLASSES
from .occ_grid import GRID_SHAPE
from .sample_index import SPLIT_IDS, SPLITS, split_sample_idx

#: folder of the voxel labels under the data root
OCC_DIR = 'pano_voxel04'
#: file of one frame under ``OCC_DIR/<split>``
OCC_FILE_SUFFIX = '_04.npz'
OCC_FILE_TEMPLATE = '{seq:03d}/{frame:03d}' + OCC_FILE_SUFFIX
GT_KEYS: Tuple[str, ...] = ('semantics', 'instances', 'mask_camera', 'mask_lidar', 'infov')
MASK_KEYS: Tuple[str, ...] = ('mask_camera', 'mask_lidar', 'infov')
#: what OccSTQ reads of a gt frame (``mask_lidar`` is not needed)
EVAL_GT_KEYS: Tuple[str, ...] = ('semantics', 'instances', 'mask_camera', 'infov')
PRED_SEM_KEY, PRED_INST_KEY = 'pano_sem', 'pano_inst'
PRED_SEM_DTYPE = np.uint8
PRED_INST_DTYPE = np.int16


class OccFileError(ValueError):
    """An occupancy file is missing, unreadable or malformed; ``path`` and ``reason`` say
    which and why (the message is ``'<path>: <reason>'``). Called with one message it is
    about several files."""

    def __init__(self, path, reason: Optional[str] = None) -> None:
        # one argument: a message about several files (``path`` is then empty)
        super().__init__(str(path) if reason is None else f'{path}: {reason}')
        self.path = '' if reason is None else str(path)
        self.reason = str(path) if reason is None else reason


def occ_file_path(root: str, split: Union[int, str], seq: int, frame: int) -> str:
    """Ground-truth file of a frame: ``<root>/<split>/<seq:03d>/<frame:03d>_04.npz``.

    ``root`` is the ``pano_voxel04`` folder; ``split`` its name or split id."""
    split = SPLITS[split] if isinstance(split, int) else split
    return os.path.join(root, split, OCC_FILE_TEMPLATE.format(seq=int(seq), frame=int(frame)))


def find_occ_files(root: str, split: str) -> Dict[Tuple[int, int], str]:
    """Ground-truth files under ``<root>/<split>``: ``{(seq, frame): path}`` of every
    ``<seq>/<frame>_04.npz`` with numeric names; :class:`OccFileError` if the folder is missing."""
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise OccFileError(split_dir, 'ground-truth split directory not found')
    frames: Dict[Tuple[int, int], str] = {}
    for path in glob.glob(os.path.join(split_dir, '*', '*' + OCC_FILE_SUFFIX)):
        seq_name = os.path.basename(os.path.dirname(path))
        frame_name = os.path.basename(path)[:-len(OCC_FILE_SUFFIX)]
        if seq_name.isdigit() and frame_name.isdigit():
            frames[(int(seq_name), int(frame_name))] = path
    return frames


def find_pred_files(pred_dir: str) -> Dict[int, str]:
    """Prediction files of ``pred_dir``: ``{sample_idx: path}`` of every ``*.npz``;
    :class:`OccFileError` for a missing folder or an npz not named ``<sample_idx>.npz``."""
    if not os.path.isdir(pred_dir):
        raise OccFileError(pred_dir, 'prediction directory not found')
    preds: Dict[int, str] = {}
    for path in sorted(glob.glob(os.path.join(pred_dir, '*.npz'))):
        stem = os.path.basename(path)[:-len('.npz')]
        if not stem.isdigit():
            raise OccFileError(path, 'prediction file name must be <sample_idx>.npz')
        idx = int(stem)
        if idx in preds:
            raise OccFileError(path, f'duplicate sample_idx {idx} (also {preds[idx]})')
        preds[idx] = path
    return preds


def sequence_frame_files(split: str, gt_root: Optional[str] = None,
                         pred_dir: Optional[str] = None,
                         sequences: Optional[Sequence[int]] = None, load_interval: int = 1,
                         max_frames: Optional[int] = None, pred_without_gt: bool = False
                         ) -> Dict[int, Dict[int, Dict[str, Optional[str]]]]:
    """The frames a viewer shows: ``{seq: {frame: dict(gt=path|None, pred=path|None)}}``,
    sorted, of every frame with ground truth (``gt_root`` = the ``pano_voxel04`` folder) or a
    prediction of ``split``; with both, predictions of frames without ground truth are left
    out unless ``pred_without_gt``. Then only ``sequences`` (each must have frames), frames
    with ``frame % load_interval == 0``, the first ``max_frames`` per sequence; sequences left
    empty are dropped."""
    frames: Dict[int, Dict[int, Dict[str, Optional[str]]]] = {}
    if gt_root:
        for (seq, frame), path in sorted(find_occ_files(gt_root, split).items()):
            frames.setdefault(seq, {})[frame] = dict(gt=path, pred=None)
    if pred_dir:
        split_id = SPLIT_IDS[split]
        for sample_idx, path in find_pred_files(pred_dir).items():
            idx = split_sample_idx(sample_idx)
            if idx.split_id != split_id:
                continue
            if gt_root and not pred_without_gt and idx.frame not in frames.get(idx.seq, {}):
                continue
            entry = frames.setdefault(idx.seq, {}).setdefault(idx.frame, dict(gt=None, pred=None))
            entry['pred'] = path
    if sequences is not None:
        missing = sorted(set(sequences) - set(frames))
        if missing:
            raise OccFileError(f'sequences {missing} of split {split} have no frames (gt root '
                               f'{gt_root}, predictions {pred_dir})')
        frames = {s: frames[s] for s in sequences}
    out = {}
    for seq in sorted(frames):
        kept = [(f, v) for f, v in sorted(frames[seq].items()) if f % load_interval == 0]
        if max_frames is not None:
            kept = kept[:max_frames]
        if kept:
            out[seq] = dict(kept)
    return out


def _member_array(fh, info: zipfile.ZipInfo, path: str, check_crc: bool) -> np.ndarray:
    """Decode one ``.npy`` member of an open npz in a single inflate call.

    ``np.load`` inflates members in 256 KiB pieces through ``zipfile`` and copies them again;
    reading the raw deflate stream at once is about twice as fast. Without ``check_crc`` a
    damaged stream still fails to inflate or has the wrong length.
    """
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) != 30 or local[:4] != b'PK\x03\x04':
        raise OccFileError(path, f'corrupt zip entry {info.filename}')
    name_len, extra_len = struct.unpack('<HH', local[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    raw = fh.read(info.compress_size)
    if len(raw) != info.compress_size:
        raise OccFileError(path, f'truncated zip entry {info.filename}')
    if info.compress_type == zipfile.ZIP_DEFLATED:
        data = zlib.decompress(raw, -15, info.file_size)
    elif info.compress_type == zipfile.ZIP_STORED:
        data = raw
    else:
        raise OccFileError(path, f'unsupported compression {info.compress_type} of '
                                 f'{info.filename}')
    if len(data) != info.file_size:
        raise OccFileError(path, f'{info.filename} inflates to {len(data)} bytes, expected '
                                 f'{info.file_size}')
    if check_crc and zlib.crc32(data) != info.CRC:
        raise OccFileError(path, f'{info.filename} fails its CRC check (corrupt data)')
    header = io.BytesIO(data[:4096])
    version = np.lib.format.read_magic(header)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(header)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(header)
    if dtype.hasobject:
        raise OccFileError(path, f'{info.filename} holds Python objects')
    count = int(np.prod(shape))
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header.tell())
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def read_occ_npz(source: Union[str, bytes], keys: Sequence[str] = GT_KEYS,
                 path: Optional[str] = None, check_crc: bool = True) -> Dict[str, np.ndarray]:
    """The arrays ``keys`` of an npz, as stored (read-only), or :class:`OccFileError`.

    Args:
        source: file path, or the file's bytes (e.g. from ``mmengine.fileio.get``).
        keys: array names that must be present.
        path: name used in errors (default: ``source`` when it is a path).
        check_crc: verify the zip CRC of every member (the offline evaluator skips it).
    """
    if path is None:
        path = source if isinstance(source, str) else '<bytes>'
    try:
        fh = open(source, 'rb') if isinstance(source, str) else io.BytesIO(source)
        with fh, zipfile.ZipFile(fh) as zf:
            infos = {i.filename[:-len('.npy')]: i for i in zf.infolist()
                     if i.filename.endswith('.npy')}
            missing = [k for k in keys if k not in infos]
            if missing:
                raise OccFileError(path, f'missing arrays {missing} (has {sorted(infos)})')
            return {k: _member_array(fh, infos[k], path, check_crc) for k in keys}
    except OccFileError:
        raise
    except FileNotFoundError:
        raise OccFileError(path, 'file not found') from None
    except (OSError, ValueError, EOFError, KeyError, struct.error, zlib.error,
            zipfile.BadZipFile) as err:
        raise OccFileError(path, f'unreadable npz ({type(err).__name__}: {err})') from None


def check_gt_arrays(path: str, arrays: Dict[str, np.ndarray],
                    grid_shape: Sequence[int] = GRID_SHAPE,
                    num_classes: Optional[int] = NUM_CLASSES) -> None:
    """Raise :class:`OccFileError` naming ``path`` unless every array has ``grid_shape`` and
    an integer or bool dtype. With ``num_classes`` also: class ids in ``[0, num_classes)``,
    non-negative instance ids, bool (or 0/1 integer) masks (what the data checker and the
    loading transform demand; the evaluator passes ``None``)."""
    grid_shape = tuple(grid_shape)
    for key, arr in arrays.items():
        if arr.shape != grid_shape:
            raise OccFileError(path, f'{key} has shape {arr.shape}, expected {grid_shape}')
    if num_classes is None:
        for key, arr in arrays.items():
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise OccFileError(path, f'{key} has dtype {arr.dtype}, expected an integer '
                                         f'or bool array')
        return
    sem, ins = arrays.get('semantics'), arrays.get('instances')
    if sem is not None:
        if not np.issubdtype(sem.dtype, np.integer):
            raise OccFileError(path, f'semantics dtype {sem.dtype} is not integer')
        lo, hi = sem.min(), sem.max()
        if lo < 0 or hi >= num_classes:
            bad = int(np.count_nonzero((sem < 0) | (sem >= num_classes)))
            raise OccFileError(path, f'semantics has class ids outside [0, {num_classes}): '
                                     f'min {lo} max {hi} ({bad} voxels)')
    if ins is not None:
        if not np.issubdtype(ins.dtype, np.integer):
            raise OccFileError(path, f'instances dtype {ins.dtype} is not integer')
        if ins.min() < 0:
            raise OccFileError(path, f'instances has negative ids (min {ins.min()})')
    for key in MASK_KEYS:
        arr = arrays.get(key)
        if arr is not None and arr.dtype != np.bool_ and not (
                np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 1):
            raise OccFileError(path, f'{key} must be bool or 0/1 integers, got {arr.dtype} '
                                     f'with range [{arr.min()}, {arr.max()}]')


def load_gt_frame(source: Union[str, bytes], grid_shape: Sequence[int] = GRID_SHAPE,
                  keys: Sequence[str] = EVAL_GT_KEYS, num_classes: Optional[int] = None,
                  path: Optional[str] = None, check_crc: bool = False
                  ) -> Dict[str, np.ndarray]:
    """Read and check one gt frame (:func:`read_occ_npz` + :func:`check_gt_arrays`).

    Defaults are the evaluator's (the four arrays OccSTQ reads, shapes and dtypes checked,
    no CRC); the loading transform and the data checker ask for ``GT_KEYS`` with
    ``num_classes`` and ``check_crc=True``. Returns the arrays as stored.
    """
    arrays = read_occ_npz(source, keys, path=path, check_crc=check_crc)
    check_gt_arrays(path or str(source), arrays, grid_shape, num_classes)
    return arrays


def load_pred_frame(path: str, grid_shape: Sequence[int] = GRID_SHAPE
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Read and check one prediction: flat ``pano_sem`` (uint8) and ``pano_inst`` (int16)."""
    data = read_occ_npz(path, (PRED_SEM_KEY, PRED_INST_KEY), check_crc=False)
    n = int(np.prod(grid_shape))
    for key, dtype in ((PRED_SEM_KEY, PRED_SEM_DTYPE), (PRED_INST_KEY, PRED_INST_DTYPE)):
        arr = data[key]
        if arr.shape not in ((n,), tuple(grid_shape)):
            raise OccFileError(path, f'{key} has shape {arr.shape}, expected ({n},) (flat C '
                                     f'order of {tuple(grid_shape)})')
        if arr.dtype != dtype:
            raise OccFileError(path, f'{key} has dtype {arr.dtype}, expected '
                                     f'{np.dtype(dtype).name}')
    return data[PRED_SEM_KEY].reshape(-1), data[PRED_INST_KEY].reshape(-1)


def write_pred_frame(path: str, semantics: np.ndarray, instances: np.ndarray) -> None:
    """Write one prediction as the original's ``format_results`` does (compressed npz,
    ``pano_sem`` uint8 / ``pano_inst`` int16, flat C order), atomically (temp file +
    ``os.replace``)."""
    semantics = np.asarray(semantics)
    instances = np.asarray(instances)
    if semantics.size != instances.size:
        raise ValueError(f'{path}: semantics has {semantics.size} voxels, instances '
                         f'{instances.size}')
    for name, arr, dtype in (('semantics', semantics, PRED_SEM_DTYPE),
                             ('instances', instances, PRED_INST_DTYPE)):
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f'{path}: {name} values [{arr.min()}, {arr.max()}] do not fit '
                             f'{np.dtype(dtype).name}')
    arrays = {PRED_SEM_KEY: semantics.reshape(-1).astype(PRED_SEM_DTYPE),
              PRED_INST_KEY: instances.reshape(-1).astype(PRED_INST_DTYPE)}
    # one file per frame of a test run: atomic, without an fsync each
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays), durable=False)
