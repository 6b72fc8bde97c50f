"""Byte-deterministic, atomic writers for the TrackOcc-Waymo file formats.

Every file is written to a temporary name next to its target and renamed, so a file either
exists complete or not at all. ``.npz`` files are zipped with fixed timestamps (numpy's own
``savez`` stamps the current time), so the same arrays always give the same bytes.
"""
import io
import pickle
import sys
import zipfile

import cv2
import numpy as np

from trackocc.utils.output_files import atomic_write_bytes

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _atomic_write_bytes(path: str, data: bytes) -> None:
    # thousands of files per data set: atomic (no partial file under the final name), no fsync
    atomic_write_bytes(path, data, durable=False)


def npz_bytes(arrays: dict) -> bytes:
    """Compressed ``.npz`` content of ``arrays`` (readable by ``np.load``), deterministic."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f'{key}.npy', date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, member.getvalue(), compresslevel=6)
    return buf.getvalue()


def write_npz(path: str, arrays: dict) -> None:
    _atomic_write_bytes(path, npz_bytes(arrays))


def write_jpeg(path: str, rgb: np.ndarray, quality: int = 92) -> None:
    """Write an RGB uint8 (H, W, 3) image as JPEG (4:4:4: thin objects keep their colour)."""
    ok, enc = cv2.imencode('.jpg', np.ascontiguousarray(rgb[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), quality,
                            int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR),
                            int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)])
    if not ok:
        raise RuntimeError(f'JPEG encoding failed for {path}')
    _atomic_write_bytes(path, enc.tobytes())


def write_points(path: str, points: np.ndarray) -> None:
    """Write LiDAR points (N, 6) as raw float32 (``.bin``)."""
    _atomic_write_bytes(path, np.ascontiguousarray(points, dtype=np.float32).tobytes())


def _canonical(obj):
    """Copy of nested dicts / lists with every string interned, so pickle's memo (and hence
    the bytes) only depends on the values, not on which process built the objects."""
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_canonical(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(obj)
    return obj


def write_pickle(path: str, obj) -> None:
    """Pickle (protocol 4) nested dicts / lists / scalars deterministically."""
    _atomic_write_bytes(path, pickle.dumps(_canonical(obj), protocol=4))
