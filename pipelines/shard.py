"""Phase 2 of a build: write one shard from encoded samples read by offset from the phase-1 parts.

This is the unit of work the runner distributes in phase 2 (one call per shard) and the unit of resumption: the
`.done` marker is written last and names the shard's fingerprint (config, inputs hash, keys), the tar's sha256
(hashed while it is written) and the count, so a later run can skip the shard and the manifest can be written
without re-reading tars. The three files are fsynced as they are closed and their folder once, before the marker
is written (fsynced too): a crash of the machine never leaves a marker for files that are not on disk, and a
resumed build also redoes a shard with a file missing. The Parquet table is written in row groups of
`ROW_GROUP_ROWS`, so memory stays flat with the shard size. Nothing is decoded or encoded here: the bytes were
made in phase 1, so a shard's bytes depend only on which samples it holds, in which order. Files of one shard,
for `{stem}` = `{name}-{split}-{NNNNNN}`: `{stem}.tar`, `{stem}.idx`, `{stem}.parquet`, `{stem}.done`.

A worker's memory does not grow with the samples of its shard: the task it receives (`ShardTask`) holds the
samples' locations as four integer arrays and a table of part names (no Python object per sample), the
tar's index is streamed to disk (`pipelines.index.IndexWriter`) and the Parquet rows are flushed every
`ROW_GROUP_ROWS`. The keys read are checked against the plan by recomputing the shard's fingerprint from
them, before any of the shard's files is put in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.parts import PARTS_DIR, PartReader
from pipelines.plan import KeyFingerprint, ShardSpec
from pipelines.tables import TableWriter, sample_columns
from pipelines.writer import ShardWriter
from r3fa.atomic import fsync_dir, write_bytes_atomic

ROW_GROUP_ROWS = 4096  # Parquet rows held and written at a time: a worker's memory does not grow with the shard


@dataclass(frozen=True)
class ShardFiles:
    """Paths of one shard's files in a shard-set folder."""

    tar: Path
    idx: Path
    parquet: Path
    done: Path

    @classmethod
    def of(cls, out_dir: str | Path, stem: str) -> "ShardFiles":
        out = Path(out_dir)
        return cls(out / f"{stem}.tar", out / f"{stem}.idx", out / f"{stem}.parquet", out / f"{stem}.done")

    def outputs(self) -> tuple[Path, ...]:
        return self.tar, self.idx, self.parquet, self.done


@dataclass(frozen=True, eq=False)
class ShardTask:
    """What a worker needs to write one shard, compactly (about 24 bytes a sample when pickled).

    Attributes:
        name: the shard's file stem.
        split: "train" or "val".
        fingerprint: the planned shard's fingerprint (`ShardSpec.fingerprint`), checked against the keys read.
        parts: the names of the parts its samples come from.
        part: per sample, in write order, the index of its part in `parts` (int32).
        offset: per sample, its byte offset in the part's record file (int64).
        length: per sample, its length in bytes (int64).
        crc32: per sample, the CRC-32 of its record (uint32), checked when it is read.
    """

    name: str
    split: str
    fingerprint: str
    parts: tuple[str, ...]
    part: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    crc32: np.ndarray

    @classmethod
    def of(cls, shard: ShardSpec, locations: Mapping[str, tuple[str, int, int, int]], stamp: str) -> "ShardTask":
        """The task of a planned shard, from the cut's locations (key -> part name, offset, length, CRC-32)."""
        where = [locations[spec.key] for spec in shard.samples]
        parts: dict[str, int] = {}
        part = np.array([parts.setdefault(name, len(parts)) for name, _, _, _ in where], np.int32)
        offset = np.array([at for _, at, _, _ in where], np.int64)
        length = np.array([size for _, _, size, _ in where], np.int64)
        crc32 = np.array([crc for _, _, _, crc in where], np.uint32)
        return cls(shard.name, shard.split, shard.fingerprint(stamp), tuple(parts), part, offset, length, crc32)

    def locations(self) -> Iterator[tuple[str, int, int, int]]:
        """(part name, offset, length, CRC-32) of each sample, in write order."""
        columns = (self.part.tolist(), self.offset.tolist(), self.length.tolist(), self.crc32.tolist())
        for part, offset, length, crc32 in zip(*columns, strict=True):
            yield self.parts[part], offset, length, crc32


@dataclass(frozen=True)
class ShardResult:
    """What a finished shard reports back to the driver (small: no samples)."""

    name: str
    split: str
    count: int



def build_shard(task: ShardTask, out_dir: str | Path, stamp: str) -> ShardResult:
    """Write one shard; its `.done` marker is written last.

    Args:
        task: the shard and its samples' locations in the parts.
        out_dir: the shard-set folder.
        stamp: the build stamp (`pipelines.build.build_stamp`) that the marker's fingerprint is made from.

    Returns:
        Its name, split and count.

    Raises:
        RuntimeError: the keys read are not the planned shard's (a part changed after the cut); nothing is
            written.
    """
    files = ShardFiles.of(out_dir, task.name)
    keys = KeyFingerprint(stamp)
    rows: list[tuple] = []
    with PartReader(out_dir) as parts, ShardWriter(files.tar, files.idx) as writer, \
            TableWriter(files.parquet, "samples") as table:  # fmt: skip
        for location in task.locations():
            sample = parts.read(*location)
            keys.add(sample.key)
            writer.write(sample.tar)
            rows.append(sample.row)
            if len(rows) == ROW_GROUP_ROWS:
                table.write(sample_columns(rows, files.tar.name))
                rows = []
        table.write(sample_columns(rows, files.tar.name))
        if keys.hexdigest() != task.fingerprint:
            raise RuntimeError(f"shard {task.name}: the samples read are not the planned ones (a part's record file "
                               f"changed after it was made); delete {PARTS_DIR}/ and build again")  # fmt: skip
    fsync_dir(files.done.parent)  # the tar, index and Parquet names, durable before the marker that vouches for them
    done = {"fingerprint": task.fingerprint, "count": writer.count, "tar_sha256": writer.sha256}
    write_bytes_atomic(files.done, json.dumps(done, sort_keys=True).encode())
    return ShardResult(task.name, task.split, writer.count)
