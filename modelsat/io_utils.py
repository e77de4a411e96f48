"""Atomic file and folder writes: a crash never leaves a half-written file where a good one stood.

Files and folders get the modes a plain `open()` / `mkdir()` would give (0644 / 0755 under the usual umask 022),
not the private 0600 / 0700 of temporary files; a file written over keeps its mode.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator


def umask() -> int:
    """The process umask, read from /proc where it can be (`os.umask` can only read it by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def blocking_file(path: str | Path) -> Path | None:
    """The parent of `path` that is a file, so that `path` cannot be created (`out/file.parquet/run`), else None:
    the nearest parent that exists, where it is not a folder. Lets a tool find it before any work is done."""
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent if parent.exists() and not parent.is_dir() else None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename it into place. A `path`
    that is a folder, or under a file, is an OSError naming it (not the temporary file)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the name of a file to write (or remove the folder)")
    if (file := blocking_file(path)) is not None:
        raise NotADirectoryError(f"cannot write {path}: {file} is a file, not a folder; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # writing over a file keeps its mode, as open(path, "wb") does
    except OSError:
        mode = 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` whole, on error it is removed.

    An existing `path` is kept until the new folder is complete, then swapped out. A `path` that is a file, or
    under a file, is an OSError naming it, raised before any work.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder; give a folder to write to (or remove the file)")
    if (file := blocking_file(path)) is not None:
        raise NotADirectoryError(f"cannot write {path}: {file} is a file, not a folder; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # as mkdir would make it (mkdtemp's is private)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
