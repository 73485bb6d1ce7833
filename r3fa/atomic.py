"""Crash-safe file writing: every file the project writes appears complete or not at all.

Write under a unique temporary name in the target's folder (`<name>.<random>.tmp`), fsync it, rename it over
the target, fsync the folder (scratch files that their reader verifies may skip the fsyncs: `durable=False`; a
group of files that a marker vouches for may share one folder fsync: `sync_folder=False`).
A killed writer leaves only `*.tmp` files behind (the shard builder removes them on resume, `TMP_SUFFIX`); two
writers of the same path never share a temporary.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"
WRITE_BUFFER = 1 << 20  # bytes buffered before a write call: a shard's ~10 KB samples are not one syscall each


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename is durable only after this)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: str | Path, durable: bool = True, sync_folder: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary beside `path` for binary writing; on a clean exit fsync it and rename it to `path`.

    The parent folder is created if needed. On an exception the temporary file is removed and `path` is left
    as it was. The file gets mode 0644 (temporaries are created 0600). `durable=False` leaves out the fsyncs
    of the file and its folder: the file still appears complete or not at all while the machine runs (a
    killed process loses nothing written), but a crash of the machine can lose or damage it. For scratch
    files whose reader checks them: a build's part files carry a checksum per record (`pipelines.parts`).
    `sync_folder=False` fsyncs the file but not its folder: its name is durable only once the caller fsyncs
    the folder (`fsync_dir`), which it does once for a group of files, before the marker that vouches for
    them (a shard's tar, index and Parquet file, `pipelines.shard`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=TMP_SUFFIX)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb", buffering=WRITE_BUFFER) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable and sync_folder:
        fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_writer(path) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes_atomic(path, text.encode())


def read_marker(path: str | Path) -> dict | None:
    """A completion marker (a JSON file written last and atomically), or None while the work is not complete.

    A missing file and one that is not JSON both mean "not complete": the caller redoes the work.
    """
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
