"""Phase 1 of a build: make every candidate of a run of source items into a record part on disk.

One task per `PartSpec` (`Plan.parts`, e.g. 64 source items). Each item is decoded once, in batches of
`BATCH_SOURCES` items labelled together (`pipelines.samples.make_samples`); every candidate becomes an
encoded sample (tar members + Parquet row) or a rejection. Files of one part, in `DIR/parts/`:

- `{part}.bin`: the encoded samples (key, tar bytes, member layout, Parquet row), one pickle each, back to
  back (read back by offset in phase 2). Scratch: written atomically but not fsynced (a build writes and
  deletes as many bytes of parts as of tars; at 128 samples per shard their fsyncs were ~4 % of a build's
  wall time). Every record is checked against its CRC-32 when phase 2 reads it, so a part that a crash of
  the machine cut short or damaged stops the build with a message saying which part to make again
  (`DamagedPartError`), never a wrong byte in a shard;
- `{part}.json`: the index, written last (atomically, not fsynced either: a crash of the machine that loses it
  makes the part be made again) and so also the part's done marker: its format, the part's fingerprint, and
  per candidate in plan order either `[key, offset, length, crc32]` or `[key, rejection fields]`.

The index is small and kept after a build (the cut of a finished build is re-derived from it on a re-run);
the `.bin` files are deleted once every shard is written, unless the build keeps them. Pickle is used for our
own intermediate files only (written and read by the same build).
"""

from __future__ import annotations

import json
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipelines.mix import MixConfig
from pipelines.plan import PartSpec
from pipelines.samples import EncodedSample, make_samples
from pipelines.writer import SampleTar
from r3fa.atomic import atomic_writer, read_marker
from r3fa.errors import UserError
from r3fa.records import Rejection

PARTS_DIR = "parts"
BATCH_SOURCES = 16  # source items decoded and labelled together (their images are held at once)
PART_FORMAT = 2  # index entries of samples [key, offset, length, crc32]; an index of another format is redone


class DamagedPartError(UserError):
    """A part's record file does not hold what its index says (cut short or changed, e.g. by a crash of the
    machine before the unsynced file reached the disk)."""


@dataclass(frozen=True)
class PartFiles:
    """Paths of one part's files in a shard-set folder."""

    data: Path
    index: Path

    @classmethod
    def of(cls, out_dir: str | Path, name: str) -> "PartFiles":
        parts = Path(out_dir) / PARTS_DIR
        return cls(parts / f"{name}.bin", parts / f"{name}.json")


@dataclass(frozen=True)
class PartResult:
    """What a finished part reports back to the driver (small: counts only)."""

    name: str
    candidates: int
    rejected: int




def _item_groups(part: PartSpec) -> list[list]:
    groups: list[list] = []
    for spec in part.samples:
        if not groups or groups[-1][0].item.key != spec.item.key:
            groups.append([])
        groups[-1].append(spec)
    return groups


def make_part(part: PartSpec, config: MixConfig, out_dir: str | Path, stamp: str) -> PartResult:
    """Make and write one part; its index (the done marker) is written last.

    Args:
        part: the planned part.
        config: the mix.
        out_dir: the shard-set folder.
        stamp: the build stamp (`pipelines.build.build_stamp`) the index's fingerprint is made from.
    """
    files = PartFiles.of(out_dir, part.name)
    files.data.parent.mkdir(parents=True, exist_ok=True)
    entries: list[list] = []
    rejected = 0
    with atomic_writer(files.data, durable=False) as fh:  # scratch, checked by its CRCs when read
        offset = 0
        groups = _item_groups(part)
        batches = (groups[i : i + BATCH_SOURCES] for i in range(0, len(groups), BATCH_SOURCES))
        for spec, made in (result for batch in batches for result in make_samples(batch, config)):
            if isinstance(made, Rejection):
                rejected += 1
                entries.append([spec.key, made.path, made.reason, made.stage, made.error, made.source])
                continue
            blob = pickle.dumps((made.key, made.tar.data, made.tar.members, made.row), protocol=5)
            fh.write(blob)
            entries.append([spec.key, offset, len(blob), zlib.crc32(blob)])
            offset += len(blob)
    index = {"format": PART_FORMAT, "fingerprint": part.fingerprint(stamp), "entries": entries}
    with atomic_writer(files.index, durable=False) as fh:  # scratch too: lost, the part is made again
        fh.write(json.dumps(index).encode())
    return PartResult(part.name, len(entries), rejected)


def part_is_complete(out_dir: str | Path, part: PartSpec, stamp: str) -> bool:
    """Whether the part has an index for this build: written (its done marker), of this format, with the
    part's fingerprint."""
    index = read_marker(PartFiles.of(out_dir, part.name).index) or {}
    return index.get("format") == PART_FORMAT and index.get("fingerprint") == part.fingerprint(stamp)


def entry_rejection(entry: list) -> Rejection | None:
    """The rejection of an index entry, or None for a made sample."""
    if len(entry) == 4:
        return None
    key, path, reason, stage, error, source = entry
    return Rejection(path, reason, stage, error, key, source)


class PartReader:
    """Read encoded samples by (part name, offset, length), keeping at most `max_open` part files open (a
    680k build has ~1,900 parts and a shard draws from all of them; the least recently opened is closed)."""

    def __init__(self, out_dir: str | Path, max_open: int = 256):
        self.out_dir = Path(out_dir)
        self.max_open = max_open
        self._open: dict[str, BinaryIO] = {}

    def read(self, part: str, offset: int, length: int, crc32: int) -> EncodedSample:
        """The encoded sample stored at `offset` (`length` bytes, CRC-32 `crc32`) of the part's record file.

        Raises:
            DamagedPartError: the bytes there are not the record's (the part must be made again).
        """
        fh = self._open.get(part)
        if fh is None:
            if len(self._open) >= self.max_open:
                self._open.pop(next(iter(self._open))).close()
            fh = self._open[part] = open(PartFiles.of(self.out_dir, part).data, "rb", buffering=0)
        data = os.pread(fh.fileno(), length, offset)
        if len(data) != length or zlib.crc32(data) != crc32:
            damage = "cut short" if len(data) != length else "changed"
            raise DamagedPartError(
                f"{PARTS_DIR}/{part}.bin is {damage} at byte {offset} (part files are not fsynced: did the machine "
                f"stop during the build?); delete {PARTS_DIR}/{part}.json and build again: the part is made again"
            )
        key, tar, members, row = pickle.loads(data)
        return EncodedSample(key, SampleTar(key, tar, members), row)

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()

    def __enter__(self) -> "PartReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
