"""DALI's WebDataset index (format v1.2), written from the member offsets the shard writer records.

`fn.readers.webdataset(index_paths=...)` reads it instead of scanning every tar at start-up. The format is
what DALI's `wds2idx` tool writes: a first line `v1.2 <samples>`, then one line per sample listing, for each
of its members in tar order, `<extension> <data offset> <size> <member name>` (offsets in bytes, after the
member's 512-byte header). The tests check our file against `wds2idx`'s on the same tar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from r3fa.atomic import write_bytes_atomic

INDEX_VERSION = "v1.2"


@dataclass(frozen=True)
class Member:
    """One tar member: name (`KEY.ext`), byte offset of its data and its size."""

    name: str
    offset: int
    size: int

    @property
    def extension(self) -> str:
        """Everything after the first dot (`params.f32`), as DALI splits names."""
        return self.name.split(".", 1)[1]


def format_index(samples: Sequence[Sequence[Member]]) -> str:
    """The index text of a tar whose samples have these members (in tar order)."""
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    lines += [" ".join(f"{m.extension} {m.offset} {m.size} {m.name}" for m in members) for members in samples]
    return "\n".join(lines) + "\n"


def write_index(path: str | Path, samples: Sequence[Sequence[Member]]) -> None:
    """Write the index of a tar atomically."""
    write_bytes_atomic(path, format_index(samples).encode())
