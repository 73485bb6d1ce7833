"""One process at a time owns a folder: `FolderLock` is an exclusive, non-blocking `fcntl.flock` on a lock file
inside it, held for the whole job, with the holder's pid and host written in it.

A second job on the same folder fails at once with a `UserError` that names the holder, instead of two
processes writing one shard set or one training run. A clean exit (or an exception) removes the file; a
killed job leaves it unlocked (the kernel drops a dead process's lock), and the next job takes it over.
Subclasses name the lock file and the job: `pipelines.outdir.BuildLock` (shard builds) and
`r3fa.train_resume.TrainLock` (training runs).
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from r3fa.errors import UserError


class FolderLock:
    """Hold a folder for one job: `with FolderLock(folder): ...`.

    Raises (on entry):
        UserError: another process holds the folder.
    """

    lock_name: str  # the lock file's name inside the folder
    doing: str  # "{folder} is being {doing} by pid ..."
    job: str  # "... wait for that {job} to finish"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / self.lock_name
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
                    f"{self.folder} is being {self.doing} by {holder} (lock {self.path}); wait for that {self.job} "
                    "to finish or choose another --out"
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

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
