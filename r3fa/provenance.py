"""Where an output came from: the code version and file hashes recorded in manifests, nme.json and checkpoints.

Kept apart from the modules that use them so that the shard builder's workers, training and evaluation can
stamp their outputs without importing each other.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import r3fa
from r3fa.paths import PROJECT_ROOT


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`r3fa` version plus the git commit of the working tree (`-dirty` if it has changes), when known.

    Asked of git once per process (two git calls, ~5 ms): the code a process runs is the code it imported."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return r3fa.__version__
    return f"{r3fa.__version__}+g{head}{'-dirty' if dirty else ''}"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
