"""Output files written atomically, and a check that an output path can be written.

A file is written to a hidden temporary file beside its target (``.<name>.tmp-<pid>``),
flushed and fsynced, and renamed over the target (``os.replace``, atomic on POSIX), so a crash
leaves either the old or the new content under the final name, never a partial file.
Pure Python (no torch), for the package and the tools alike.
"""
import contextlib
import os
import os.path as osp
import re
from typing import BinaryIO, Callable

#: the names :func:`temp_path` gives (group 1: the writer's pid)
TEMP_NAME = re.compile(r'^\..+\.tmp-(\d+)$')


def temp_path(path: str, keep_suffix: bool = False) -> str:
    """Hidden temporary name beside ``path``: ``<dir>/.<name>.tmp-<pid>`` (no ``*.pth``
    match), or ``<dir>/.<stem>.tmp-<pid><ext>`` with ``keep_suffix`` (for writers that pick
    the format by the extension, e.g. video encoders)."""
    folder, name = osp.split(path)
    if keep_suffix:
        stem, ext = osp.splitext(name)
        return osp.join(folder, f'.{stem}.tmp-{os.getpid()}{ext}')
    return osp.join(folder, f'.{name}.tmp-{os.getpid()}')


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(folder or '.', os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(handle, data: bytes) -> None:
    """Write ``data`` to the open temporary file (a separate function so tests can cut it)."""
    handle.write(data)


def atomic_write(path: str, write: Callable[[BinaryIO], None], durable: bool = True) -> None:
    """Call ``write(handle)`` on a temporary file so that ``path`` holds either its old or its
    new content.

    The file is :func:`temp_path` (flushed and, if ``durable``, fsynced with its folder, so
    the content also survives a power loss), which then replaces ``path``; on any error, or an
    interrupt, the temporary file is removed and ``path`` is left as it was. Missing folders
    are created.
    """
    path = osp.abspath(path)
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, 'wb') as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    if durable:
        _fsync_dir(osp.dirname(path))


def atomic_write_bytes(path: str, data: bytes, durable: bool = True) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda handle: _write_all(handle, data), durable)


def atomic_write_text(path: str, text: str, encoding: str = 'utf-8',
                      durable: bool = True) -> None:
    """:func:`atomic_write_bytes` for text (e.g. ``last_checkpoint``, JSON reports)."""
    atomic_write_bytes(path, text.encode(encoding), durable)


def check_output_path(path: str, what: str) -> str:
    """``path`` made absolute, or ``ValueError`` (naming ``what``, e.g. ``'--json'``) unless it
    can be written as a file: it is not a folder and its nearest existing parent is a writable
    folder (missing folders are created when writing). Check before long work, so that a bad
    path does not lose the result."""
    path = osp.abspath(path)
    if osp.isdir(path):
        raise ValueError(f'{what} {path} is a folder, expected a file path')
    parent = osp.dirname(path)
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise ValueError(f'{what} {path} cannot be written: {parent} is a file, not a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f'{what} {path} cannot be written: no write permission in {parent}')
    return path
