"""The shard-set folder is owned: one build at a time holds it, and a build deletes only the files it names.

`BuildLock` is `DIR/.r3fa-build.lock`, locked with `fcntl.flock` (exclusive, non-blocking) for the whole
build, with the holder's pid and host inside: a second build into the same folder fails at once with a
`UserError` that names the holder. A clean exit removes the file; a killed build leaves it unlocked (the
kernel drops a dead process's lock), and the next build takes it over.

`owned_pattern` / `is_own_temporary` say which files of the folder belong to the builder of a shard set
named `name`: its shard and part files, the set's fixed files, and the temporaries that `r3fa.atomic`
(`<file>.<8 random characters>.tmp`) and the shard writer (`<tar>.tmp`) make for exactly those files. A
foreign `notes.tmp` is never touched.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path
from types import TracebackType

from r3fa.atomic import TMP_SUFFIX
from r3fa.errors import UserError

LOCK_NAME = ".r3fa-build.lock"
_ATOMIC_TMP = re.compile(rf"(?P<target>.+)\.[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}")  # tempfile.mkstemp's names


class BuildLock:
    """Hold a shard-set folder for one build: `with BuildLock(out): ...`.

    Raises (on entry):
        UserError: another process holds the folder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `UserError` at once."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise UserError(
                    f"{self.folder} is being built by {holder} (lock {self.path}); wait for that build to finish "
                    "or choose another --out"
                ) from None
            try:  # the holder may have removed the file between our open and our lock: lock the file on disk
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then drop the lock."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "BuildLock":
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def owned_pattern(name: str, fixed: tuple[str, ...]) -> re.Pattern:
    """File names (not paths) that the builder of shard set `name` writes: the shard files
    `{name}-{train|val}-NNNNNN.{tar,idx,parquet,done}`, the phase-1 parts `{name}-part-NNNNNN.{bin,json}` and
    the `fixed` names."""
    shard = rf"{re.escape(name)}-(?:train|val)-\d{{6}}\.(?:tar|idx|parquet|done)"
    part = rf"{re.escape(name)}-part-\d{{6}}\.(?:bin|json)"
    return re.compile("|".join([shard, part, *map(re.escape, fixed)]))


def is_own_temporary(path: Path, owned: re.Pattern) -> bool:
    """Whether `path` is a temporary that the builder made for one of its `owned` files."""
    name = path.name
    if not name.endswith(TMP_SUFFIX):
        return False
    atomic = _ATOMIC_TMP.fullmatch(name)
    return bool(owned.fullmatch(name.removesuffix(TMP_SUFFIX)) or (atomic and owned.fullmatch(atomic["target"])))
