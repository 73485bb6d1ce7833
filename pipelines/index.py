"""DALI's WebDataset index (format v1.2), written from the member offsets the shard writer records.

`fn.readers.webdataset(index_paths=...)` reads it instead of scanning every tar at start-up. The format is
what DALI's `wds2idx` tool writes: a first line `v1.2 <samples>`, then one line per sample listing, for each
of its members in tar order, `<extension> <data offset> <size> <member name>` (offsets in bytes, after the
member's 512-byte header). The tests check our file against `wds2idx`'s on the same tar.

The shard writer streams its index (`IndexWriter`): each sample's line goes to an unnamed temporary file in
the index's folder as the sample is written, and `close` writes the header and copies the lines into place,
so a writer's memory does not grow with the samples of its shard. `format_index` makes the same text at once
(what `verify` compares a shard's index with).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from r3fa.atomic import atomic_writer

INDEX_VERSION = "v1.2"


class Member(NamedTuple):
    """One tar member: name (`KEY.ext`), byte offset of its data and its size (a named tuple: a shard writer
    makes four per sample)."""

    name: str
    offset: int
    size: int

    @property
    def extension(self) -> str:
        """Everything after the first dot (`params.f32`), as DALI splits names."""
        return self.name.split(".", 1)[1]


def index_line(members: Sequence[Member]) -> str:
    """One sample's line of the index (without the newline)."""
    return " ".join(f"{m.extension} {m.offset} {m.size} {m.name}" for m in members)


def _header(samples: int) -> str:
    return f"{INDEX_VERSION} {samples}\n"


def format_index(samples: Sequence[Sequence[Member]]) -> str:
    """The index text of a tar whose samples have these members (in tar order)."""
    return _header(len(samples)) + "".join(index_line(members) + "\n" for members in samples)


class IndexWriter:
    """Stream a tar's index: `add` one sample's members at a time, `close` writes the file atomically.

    The lines wait in an unnamed temporary file in the index's folder (gone with the process if it dies), so
    memory stays flat however many samples the tar holds; the file written is `format_index`'s text.

    Args:
        path: the index file to write on `close`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self._lines = tempfile.TemporaryFile(dir=self.path.parent)

    def add(self, members: Sequence[Member]) -> None:
        """Append the line of the next sample (its members in tar order)."""
        self._lines.write((index_line(members) + "\n").encode())
        self.count += 1

    def close(self) -> None:
        """Write the header and the lines to `path` atomically (fsynced; its folder is not: the shard's
        writer fsyncs it once for the shard's files); drop the temporary."""
        with self._lines, atomic_writer(self.path, sync_folder=False) as fh:
            fh.write(_header(self.count).encode())
            self._lines.seek(0)
            shutil.copyfileobj(self._lines, fh)

    def abort(self) -> None:
        """Drop the temporary; write nothing."""
        self._lines.close()
