"""Checkpoint files on disk: atomic writes, a cheap completeness check and the choice of the
checkpoint to resume from.

MMEngine's ``CheckpointHook`` writes ``iter_N.pth`` and ``last_checkpoint`` in place, so a kill
during the write leaves a truncated (often 0-byte) file, and ``find_latest_checkpoint`` takes
whatever ``last_checkpoint`` says. Here a file is written to a hidden temporary file in the
target's directory and renamed over the target (``os.replace``, atomic on POSIX), and a
checkpoint is only resumed from after :func:`checkpoint_problem` found it complete.
"""
import contextlib
import logging
import os
import os.path as osp
import re
import zipfile
from typing import Iterable, List, Optional

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log

from ..utils.output_files import (TEMP_NAME, atomic_write, atomic_write_bytes,  # noqa: F401
                                  atomic_write_text, temp_path)

#: names CheckpointHook gives regular checkpoints (``filename_tmpl`` 'iter_{}.pth' / 'epoch_{}.pth')
CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


class CheckpointFileError(RuntimeError):
    """A checkpoint file that cannot be resumed from (message names the file and the problem)."""


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend whose ``put``/``put_text`` replace files atomically.

    Select it with ``backend_args=dict(backend='atomic_local')`` (``SafeCheckpointHook`` does
    this for local checkpoint folders); reading, listing and removing are LocalBackend's.
    """

    def put(self, obj: bytes, filepath) -> None:
        os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
        atomic_write_bytes(str(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove the temporary files of :func:`temp_path` left in ``folder`` by dead processes."""
    removed = []
    if not osp.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        match = TEMP_NAME.match(name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # its writer still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # a live process of another user
        with contextlib.suppress(OSError):
            os.remove(osp.join(folder, name))
            removed.append(osp.join(folder, name))
    return removed


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not a complete checkpoint, or None if it looks complete.

    Cheap: only the zip central directory of the ``torch.save`` archive is read (it is written
    last, so a cut-short file has none), plus its ``data.pkl`` record; tensors are not read.
    Files in torch's legacy (non-zip) format are reported as incomplete.
    """
    if not osp.exists(path):
        return 'does not exist'
    if not osp.isfile(path):
        return 'is not a file'
    size = osp.getsize(path)
    if size == 0:
        return 'is empty (0 bytes; its writing was probably interrupted)'
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        return (f'is not a complete torch.save archive ({size} bytes; {err}): its writing was '
                'probably interrupted, or it is not a checkpoint')
    if not any(info.filename == 'data.pkl' or info.filename.endswith('/data.pkl')
               for info in infos):
        return 'is a zip archive without a data.pkl record, not a torch.save checkpoint'
    end = max((info.header_offset + info.compress_size for info in infos), default=0)
    if end > size:
        return f'is truncated: its records need {end} bytes but it has {size}'
    return None


def check_checkpoint_file(path: str) -> None:
    """Raise FileNotFoundError / :class:`CheckpointFileError` naming ``path`` and its problem."""
    problem = checkpoint_problem(path)
    if problem == 'does not exist':
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    if problem is not None:
        raise CheckpointFileError(f'checkpoint {path} {problem}')


def read_checkpoint_meta(path: str) -> dict:
    """``meta`` of a complete checkpoint (the pickle is read, tensors are only memory-mapped)."""
    check_checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location='cpu', mmap=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointFileError(f'checkpoint {path} cannot be read: {err}') from err
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return meta if isinstance(meta, dict) else {}


def _step(path: str) -> int:
    match = re.search(r'(\d+)\.pth$', osp.basename(path))
    return int(match.group(1)) if match else -1


def _last_checkpoint_hint(work_dir: str) -> Optional[str]:
    """The path ``<work_dir>/last_checkpoint`` names, if it names an existing file."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record, encoding='utf-8', errors='replace') as handle:
        text = handle.read().strip()
    if not text:
        print_log(f'{record} is empty; looking for checkpoint files instead', logger='current',
                  level=logging.WARNING)
        return None
    if not osp.isfile(text):
        print_log(f'{record} names {text[:200]!r}, which is not a file; looking for checkpoint '
                  'files instead', logger='current', level=logging.WARNING)
        return None
    return text


def find_resume_checkpoint(work_dir: str, checkpoint_dirs: Iterable[str] = ()) -> Optional[str]:
    """The newest complete checkpoint of ``work_dir`` (and of ``checkpoint_dirs``).

    Candidates are the ``iter_N.pth``/``epoch_N.pth`` files of those folders and the file
    ``last_checkpoint`` names (a hint only: the file it names may be older, broken or missing).
    They are tried from the highest N down (ties: newest modification time first); each one
    :func:`checkpoint_problem` rejects is skipped with a warning naming it.

    Returns: the path, or None if there are no candidates at all.
    Raises: CheckpointFileError if there are candidates but none of them is complete.
    """
    folders = list(dict.fromkeys([work_dir, *checkpoint_dirs]))
    candidates = set()
    hint = _last_checkpoint_hint(work_dir)
    if hint is not None:
        candidates.add(osp.abspath(hint))
    for folder in folders:
        if osp.isdir(folder):
            candidates.update(osp.abspath(osp.join(folder, name)) for name in os.listdir(folder)
                              if CHECKPOINT_NAME.match(name))
    def newest_first(path):
        return _step(path), osp.getmtime(path) if osp.exists(path) else 0.0

    ordered = sorted(candidates, key=newest_first, reverse=True)
    broken = []
    for path in ordered:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        print_log(f'not resuming from checkpoint {path}: it {problem}', logger='current',
                  level=logging.WARNING)
        broken.append(path)
    if broken:
        raise CheckpointFileError(
            f'cannot resume: none of the checkpoints in {", ".join(folders)} is complete '
            f'({", ".join(osp.basename(p) for p in broken)}); remove them to start afresh or '
            'give a good one with --resume FILE')
    return None


def resolve_resume_checkpoint(load_from: Optional[str], work_dir: str,
                              checkpoint_dirs: Iterable[str] = ()) -> Optional[str]:
    """The checkpoint a ``resume=True`` run continues from.

    An explicit ``load_from`` must be complete (else FileNotFoundError / CheckpointFileError
    naming it; remote URIs are passed through unchecked); without one, the newest complete
    checkpoint of the work dir (:func:`find_resume_checkpoint`), or None if there is none.
    """
    if load_from is not None:
        if '://' not in str(load_from):
            check_checkpoint_file(str(load_from))
        return str(load_from)
    return find_resume_checkpoint(work_dir, checkpoint_dirs)
