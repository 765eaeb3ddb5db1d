"""Atomic file output: nothing half-written is ever visible under its final name."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Permissions of a file created the ordinary way (temporary files start as 0600).
FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def _atomic_handle(path: Path, mode: str, **open_args) -> Iterator[IO]:
    """A handle on a temporary file next to ``path``, renamed onto ``path`` once the block ends
    normally and the data are on disk; removed if the block fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    with _atomic_handle(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_text_writer(path: Path) -> contextlib.AbstractContextManager[TextIO]:
    """Stream text into ``path`` (large reports need not fit in memory); it appears only when complete."""
    return _atomic_handle(path, "w", encoding="utf-8")


@contextlib.contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A hidden scratch folder inside ``parent`` that is removed however the block ends.

    Work is assembled here and then moved into place with :func:`publish`, so an interrupted
    run (Ctrl-C, full disk, crash) leaves no partial output under a final name.
    """
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=".tmp", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(staged: Path, final: Path) -> None:
    """Replace ``final`` (a folder or file) by ``staged`` with renames only.

    The old content is first renamed aside and deleted only after the new one is in place.
    """
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    try:
        os.replace(staged, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
