"""Phase 2 of a build: write one shard from encoded samples read by offset from the phase-1 parts.

This is the unit of work the runner distributes in phase 2 (one call per shard) and the unit of resumption:
the `.done` marker is written last and names the shard's fingerprint (config, inputs hash, keys), the tar's
sha256 and the count, so a later run can skip the shard and the manifest can be written without re-reading
tars. The Parquet table is written in row groups of `ROW_GROUP_ROWS`, so memory stays flat with the shard
size. Nothing is decoded or encoded here: the bytes were made in phase 1, so a shard's bytes depend only on
which samples it holds, in which order. Files of one shard, for `{stem}` = `{name}-{split}-{NNNNNN}`:
`{stem}.tar`, `{stem}.idx`, `{stem}.parquet`, `{stem}.done`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.parts import PartReader
from pipelines.plan import ShardSpec
from pipelines.tables import TableWriter
from pipelines.writer import ShardWriter
from r3fa.atomic import write_bytes_atomic
from r3fa.provenance import file_sha256

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


@dataclass(frozen=True)
class ShardTask:
    """A shard and where each of its samples lies: (part name, offset, length), in the shard's order."""

    shard: ShardSpec
    locations: tuple[tuple[str, int, int], ...]


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
    """
    shard = task.shard
    files = ShardFiles.of(out_dir, shard.name)
    rows: list[dict] = []
    with PartReader(out_dir) as parts, ShardWriter(files.tar, files.idx) as writer, \
            TableWriter(files.parquet, "samples") as table:  # fmt: skip
        for spec, location in zip(shard.samples, task.locations, strict=True):
            sample = parts.read(*location)
            if sample.key != spec.key:
                raise RuntimeError(f"{location}: holds {sample.key!r}, the cut placed {spec.key!r} there")
            writer.write(sample.key, sample.members)
            rows.append({**sample.row, "shard": shard.tar})
            if len(rows) == ROW_GROUP_ROWS:
                table.write(rows)
                rows = []
        table.write(rows)
    done = {"fingerprint": shard.fingerprint(stamp), "count": writer.count, "tar_sha256": file_sha256(files.tar)}
    write_bytes_atomic(files.done, json.dumps(done, sort_keys=True).encode())
    return ShardResult(shard.name, shard.split, writer.count)
