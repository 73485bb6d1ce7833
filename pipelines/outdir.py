"""The shard-set folder is owned: one build at a time holds it, and a build deletes only the files it names.

`BuildLock` is `DIR/.r3fa-build.lock` (`r3fa.folder_lock.FolderLock`): a second build into the same folder
fails at once with a `UserError` that names the holder; a killed build's lock is taken over by the next build.

`owned_pattern` / `is_own_temporary` say which files of the folder belong to the builder of a shard set
named `name`: its shard and part files, the set's fixed files, and the temporaries that `r3fa.atomic`
(`<file>.<8 random characters>.tmp`) and the shard writer (`<tar>.tmp`) make for exactly those files. A
foreign `notes.tmp` is never touched.
"""

from __future__ import annotations

import re
from pathlib import Path

from r3fa.atomic import TMP_SUFFIX
from r3fa.folder_lock import FolderLock

LOCK_NAME = ".r3fa-build.lock"
_ATOMIC_TMP = re.compile(rf"(?P<target>.+)\.[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}")  # tempfile.mkstemp's names


class BuildLock(FolderLock):
    """Hold a shard-set folder for one build: `with BuildLock(out): ...` (raises `UserError` if held)."""

    lock_name = LOCK_NAME
    doing = "built"
    job = "build"


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
