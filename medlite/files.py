"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed over it, so a
reader (or a run resumed after ``kill -9``) sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TMP_SUFFIX = ".tmp"


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(folder: str | os.PathLike) -> None:
    """Before long work that ends in files: ``folder`` can be created and written in. Raises PermissionError
    with a message naming the folder."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(e.errno, f"{folder}: cannot write the run folder here ({e.strerror or e}); "
                                       "choose another --out or fix its permissions") from e


def check_free_space(folder: str | os.PathLike, need_bytes: int) -> None:
    """``folder``'s disk has ``need_bytes`` free; OSError (ENOSPC) naming the folder and the need if not."""
    import errno
    import shutil

    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(errno.ENOSPC, f"{folder}: {free / 2**20:.0f} MiB free on its disk, the run's checkpoints "
                                    f"need about {need_bytes / 2**20:.0f} MiB; free space or choose another --out")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``folder`` (a kill between
    creating and renaming them); returns what was removed. Only names this module makes: ``.NAME.*.tmp``."""
    removed = []
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, fsync it and rename it to ``path``.

    The file gets the permissions any new file would (0666 minus the umask), not ``mkstemp``'s 0600, so a
    shared run folder stays readable by the group like the run's other files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
