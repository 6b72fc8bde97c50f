"""Reading and writing the occupancy npz files the evaluation uses, with clear errors.

Ground truth: ``<gt_root>/<split>/<seq:03d>/<frame:03d>_04.npz`` with ``semantics``,
``instances``, ``mask_camera``, ``infov`` of shape (200, 200, 16).
Predictions: ``<pred_dir>/<sample_idx>.npz`` with ``pano_sem`` uint8 and ``pano_inst`` int16,
flat (640000,) in the C order of (200, 200, 16) (what the original's ``format_results``
writes). ``sample_idx = split_id * 1_000_000 + seq * 1000 + frame`` (split_id 0 training,
1 validation).

numpy only.
"""
import io
import os
import struct
import zipfile
import zlib
from typing import Dict, Tuple

import numpy as np

GRID_SHAPE: Tuple[int, int, int] = (200, 200, 16)
SPLIT_IDS = {'training': 0, 'validation': 1}
PRED_SEM_DTYPE = np.uint8
PRED_INST_DTYPE = np.int16


class OccFileError(ValueError):
    """A ground-truth or prediction file is missing, unreadable or malformed."""


def split_sample_idx(sample_idx: int) -> Tuple[int, int, int]:
    """``sample_idx`` -> (split_id, seq, frame)."""
    sample_idx = int(sample_idx)
    return sample_idx // 1_000_000, sample_idx % 1_000_000 // 1000, sample_idx % 1000


def make_sample_idx(split_id: int, seq: int, frame: int) -> int:
    return int(split_id) * 1_000_000 + int(seq) * 1000 + int(frame)


def gt_frame_path(gt_root: str, split: str, seq: int, frame: int) -> str:
    return os.path.join(gt_root, split, f'{seq:03d}', f'{frame:03d}_04.npz')


def _member_array(fh, info: zipfile.ZipInfo, path: str) -> np.ndarray:
    """Decode one ``.npy`` member of an open npz in a single inflate call.

    ``np.load`` inflates members in 256 KiB pieces through ``zipfile`` and copies them again;
    reading the raw deflate stream at once is about twice as fast. The zip CRC is not
    recomputed; a damaged stream still fails to inflate or has the wrong length.
    """
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) != 30 or local[:4] != b'PK\x03\x04':
        raise OccFileError(f'{path}: corrupt zip entry {info.filename}')
    name_len, extra_len = struct.unpack('<HH', local[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    raw = fh.read(info.compress_size)
    if len(raw) != info.compress_size:
        raise OccFileError(f'{path}: truncated zip entry {info.filename}')
    if info.compress_type == zipfile.ZIP_DEFLATED:
        data = zlib.decompress(raw, -15, info.file_size)
    elif info.compress_type == zipfile.ZIP_STORED:
        data = raw
    else:
        raise OccFileError(f'{path}: unsupported compression {info.compress_type} '
                           f'of {info.filename}')
    if len(data) != info.file_size:
        raise OccFileError(f'{path}: {info.filename} inflates to {len(data)} bytes, '
                           f'expected {info.file_size}')
    header = io.BytesIO(data[:4096])
    version = np.lib.format.read_magic(header)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(header)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(header)
    if dtype.hasobject:
        raise OccFileError(f'{path}: {info.filename} holds Python objects')
    count = int(np.prod(shape))
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header.tell())
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _open_npz(path: str, keys: Tuple[str, ...]) -> Dict[str, np.ndarray]:
    """Arrays ``keys`` of the npz ``path`` (read-only), or :class:`OccFileError`."""
    try:
        with open(path, 'rb') as fh:
            with zipfile.ZipFile(fh) as zf:
                infos = {i.filename[:-len('.npy')]: i for i in zf.infolist()
                         if i.filename.endswith('.npy')}
                missing = [k for k in keys if k not in infos]
                if missing:
                    raise OccFileError(f'{path}: missing arrays {missing} (has {sorted(infos)})')
                return {k: _member_array(fh, infos[k], path) for k in keys}
    except OccFileError:
        raise
    except FileNotFoundError:
        raise OccFileError(f'{path}: file not found') from None
    except (OSError, ValueError, EOFError, KeyError, struct.error, zlib.error,
            zipfile.BadZipFile) as err:
        raise OccFileError(f'{path}: unreadable npz ({type(err).__name__}: {err})') from None


def load_gt_frame(path: str, grid_shape: Tuple[int, ...] = GRID_SHAPE) -> Dict[str, np.ndarray]:
    """Load and check one gt frame. Returns the four arrays reshaped to ``grid_shape``."""
    data = _open_npz(path, ('semantics', 'instances', 'mask_camera', 'infov'))
    for key, arr in data.items():
        if arr.shape != tuple(grid_shape):
            raise OccFileError(f'{path}: {key} has shape {arr.shape}, expected {tuple(grid_shape)}')
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise OccFileError(f'{path}: {key} has dtype {arr.dtype}, expected an integer '
                               f'or bool array')
    return data


def load_pred_frame(path: str, grid_shape: Tuple[int, ...] = GRID_SHAPE
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Load and check one prediction: returns flat ``pano_sem`` (uint8), ``pano_inst`` (int16)."""
    data = _open_npz(path, ('pano_sem', 'pano_inst'))
    n = int(np.prod(grid_shape))
    for key, dtype in (('pano_sem', PRED_SEM_DTYPE), ('pano_inst', PRED_INST_DTYPE)):
        arr = data[key]
        if arr.shape not in ((n,), tuple(grid_shape)):
            raise OccFileError(f'{path}: {key} has shape {arr.shape}, expected ({n},) '
                               f'(flat C order of {tuple(grid_shape)})')
        if arr.dtype != dtype:
            raise OccFileError(f'{path}: {key} has dtype {arr.dtype}, expected '
                               f'{np.dtype(dtype).name}')
    return data['pano_sem'].reshape(-1), data['pano_inst'].reshape(-1)


def write_pred_frame(path: str, semantics: np.ndarray, instances: np.ndarray) -> None:
    """Write one prediction as the original's ``format_results`` does (compressed npz,
    ``pano_sem`` uint8 / ``pano_inst`` int16, flat C order)."""
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
    dirname = os.path.dirname(path)
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    np.savez_compressed(path, pano_sem=semantics.reshape(-1).astype(PRED_SEM_DTYPE),
                        pano_inst=instances.reshape(-1).astype(PRED_INST_DTYPE))
