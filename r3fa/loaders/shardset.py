"""What both training loaders agree on: which shards a split has, how to read any sample by its global index,
which samples a rank reads at each step, and what a batch looks like.

The DALI pipeline and the PyTorch fallback must give a rank the same samples with the same labels, so every
decision that fixes *which* samples a rank sees lives here (and in `order`) and nowhere else:

- the shard list of a split, from `manifest.json` (sample counts included, so `len(loader)` needs no I/O);
- the global sample index: shards in manifest order, samples in tar order;
- random access to a sample through its shard's `.idx` offsets (`SampleReader`), checked so that no sample
  is ever lost or invented silently: the index must list exactly the manifest's count, every member name must
  be safe (`KEY.ext`, key of letters, digits, `_` and `-`), the members must lie inside the tar, and the tar
  header in front of each member must carry the name the index gives it. Anything else is a `ShardDataError`
  naming the shard and the key;
- the epoch plan: the canonical order (`order.epoch_order`) and this rank's slice of it (`order.RankSlice`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from r3fa.errors import UserError
from r3fa.loaders.jitter import OnlineJitter
from r3fa.loaders.order import RankSlice, epoch_order
from r3fa.shard_contract import (
    IMAGE_EXT,
    IMAGE_SIZE,
    LABEL_BYTES,
    LANDMARKS_DIM,
    LANDMARKS_EXT,
    PARAMS_DIM,
    PARAMS_EXT,
    SAMPLE_MEMBERS,
    load_manifest,
    read_label,
)

_TAR_BLOCK = 512
_INDEX_VERSION = "v1.2"


class ShardDataError(UserError):
    """A shard that cannot deliver what its manifest promises (names the shard and, where known, the key)."""


@dataclass(frozen=True)
class Shard:
    """One shard of a split: its tar, its DALI index and its sample count (from the manifest)."""

    tar: Path
    index: Path
    count: int


def read_shards(shard_dir: Path, split: str) -> list[Shard]:
    """The complete shards of `split`, in the manifest's order.

    Args:
        shard_dir: a shard set written by `pipelines.build.build_shards`.
        split: "train" or "val".

    Returns:
        The shards whose manifest entry has this split (empty shards left out).

    Raises:
        UserError: no readable `manifest.json` (`r3fa.shard_contract.load_manifest`), or a listed shard without its
            tar, index or `.done` marker.
    """
    shard_dir = Path(shard_dir)
    shards = []
    for entry in load_manifest(shard_dir).split_shards(split):
        tar, index = shard_dir / entry.file, shard_dir / entry.idx
        for needed in (tar, index, tar.with_suffix(".done")):
            if not needed.exists():
                raise UserError(f"{needed}: listed in its manifest but missing; run `r3fa shards verify {shard_dir}`")
        shards.append(Shard(tar=tar, index=index, count=entry.count))
    return shards


@dataclass(frozen=True)
class ShardIndex:
    """One shard's samples as its `.idx` lists them: keys, and per sample the byte span that holds its members
    (from the first member's tar header to the last member's end) and where each member lies inside the span."""

    keys: tuple[str, ...]
    span: np.ndarray  # (n, 2) int64: [begin, end) in the tar
    members: np.ndarray  # (n, 3, 2) int64: (offset in span, size) of jpg, params, lms
    names: tuple[tuple[str, str, str], ...]  # member names of jpg, params, lms


def _fail(shard: Shard, what: str, key: str | None = None) -> ShardDataError:
    where = f"{shard.tar}" + (f", sample {key}" if key else "")
    return ShardDataError(f"{where}: {what}; run `r3fa shards verify {shard.tar.parent}` and rebuild the shard")


def _safe_key(key: str) -> bool:
    """Letters, digits, `_` and `-` only (no dots, slashes or anything a path could be made of)."""
    return key.isascii() and key.replace("_", "").replace("-", "").isalnum()


def _parse_line(shard: Shard, line: str) -> tuple[str, dict[str, tuple[int, int, str]]]:
    fields = line.split()
    if not fields or len(fields) % 4:
        raise _fail(shard, f"malformed index line {line[:80]!r}")
    key = fields[3].partition(".")[0]
    found: dict[str, tuple[int, int, str]] = {}
    for i in range(0, len(fields), 4):
        ext, offset, size, name = fields[i : i + 4]
        if name != f"{key}.{ext}" or ext not in SAMPLE_MEMBERS or not _safe_key(key):
            raise _fail(shard, f"unsafe or unexpected member name {name!r}", key if _safe_key(key) else None)
        try:
            found[ext] = (int(offset), int(size), name)
        except ValueError:
            raise _fail(shard, f"malformed offset/size in index line {line[:80]!r}", key) from None
    for ext in (IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT):
        if ext not in found:
            raise _fail(shard, f"member {key}.{ext} missing", key)
    for ext, size in LABEL_BYTES.items():
        if found[ext][1] != size:
            raise _fail(shard, f"{key}.{ext} has {found[ext][1]} bytes, expected {size}", key)
    return key, found


@functools.lru_cache(maxsize=256)
def _load_index(shard: Shard, tar_size: int, tar_mtime_ns: int, index_mtime_ns: int) -> ShardIndex:
    try:
        lines = shard.index.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(shard, f"unreadable index {shard.index.name} ({err})") from None
    head = lines[0].split() if lines else []
    if len(head) != 2 or head[0] != _INDEX_VERSION or not head[1].isdigit():
        raise _fail(shard, f"{shard.index.name} does not start with '{_INDEX_VERSION} <samples>'")
    entries = [_parse_line(shard, line) for line in lines[1:] if line.strip()]
    if int(head[1]) != len(entries) or len(entries) != shard.count:
        last = entries[-1][0] if entries else None
        raise _fail(
            shard, f"the manifest lists {shard.count} samples, the index {len(entries)} (header {head[1]}; last {last})"
        )
    keys, span, members, names = [], np.zeros((len(entries), 2), np.int64), np.zeros((len(entries), 3, 2), np.int64), []
    for i, (key, found) in enumerate(entries):
        begin = min(offset for offset, _, _ in found.values()) - _TAR_BLOCK
        end = max(offset + size for offset, size, _ in found.values())
        if begin < 0 or end > tar_size:
            raise _fail(shard, f"members lie outside the tar ({tar_size} bytes: truncated?)", key)
        span[i] = begin, end
        for j, ext in enumerate((IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT)):
            members[i, j] = found[ext][0] - begin, found[ext][1]
        keys.append(key)
        names.append(tuple(found[ext][2] for ext in (IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT)))
    if len(set(keys)) != len(keys):
        raise _fail(shard, "a key appears twice in the index")
    return ShardIndex(tuple(keys), span, members, tuple(names))


def load_index(shard: Shard) -> ShardIndex:
    """A shard's checked index (cached per process while the files are unchanged).

    Raises:
        ShardDataError: see the module docstring.
    """
    try:
        tar, index = shard.tar.stat(), shard.index.stat()
    except OSError as err:
        raise _fail(shard, f"cannot stat the shard's files ({err})") from None
    return _load_index(shard, tar.st_size, tar.st_mtime_ns, index.st_mtime_ns)


@dataclass(frozen=True)
class RawSample:
    """A sample's bytes: key, encoded JPEG, params (float32[62]) and landmarks (float32[136])."""

    key: str
    jpeg: bytes
    params: np.ndarray
    landmarks: np.ndarray


@dataclass
class SampleReader:
    """Random access to the samples of a split by global index (shards in manifest order, samples in tar order).

    Each read is one `pread` of the sample's span; the tar header in front of every member is checked against
    the index's member name, so an index that does not describe its tar is an error, not wrong labels. File
    descriptors are opened lazily per process (safe to use after a fork); `close()` (or `with`) releases them.
    """

    shards: tuple[Shard, ...]
    indices: tuple[ShardIndex, ...] = field(init=False)
    _starts: np.ndarray = field(init=False)
    _fds: dict[tuple[int, int], int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = tuple(load_index(shard) for shard in self.shards)
        self._starts = np.cumsum([0] + [len(index.keys) for index in self.indices])
        keys = [key for index in self.indices for key in index.keys]
        if len(set(keys)) != len(keys):
            raise ShardDataError(f"{self.shards[0].tar.parent}: a sample key appears in two shards")

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def sizes(self) -> list[int]:
        """Samples per shard, in order."""
        return [len(index.keys) for index in self.indices]

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, position in that shard) of global index `i`."""
        s = int(np.searchsorted(self._starts, i, side="right")) - 1
        return s, int(i - self._starts[s])

    def key(self, i: int) -> str:
        """The key of global index `i`."""
        s, j = self.locate(i)
        return self.indices[s].keys[j]

    def close(self) -> None:
        """Close the file descriptors this process opened (a forked child's are its own)."""
        pid = os.getpid()
        for slot in [slot for slot in self._fds if slot[0] == pid]:
            os.close(self._fds.pop(slot))

    def __enter__(self) -> "SampleReader":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _fd(self, s: int) -> int:
        slot = (os.getpid(), s)
        if slot not in self._fds:
            self._fds[slot] = os.open(self.shards[s].tar, os.O_RDONLY)
        return self._fds[slot]

    def read(self, i: int) -> RawSample:
        """The bytes of global sample `i`.

        Raises:
            ShardDataError: a short read or a tar header that does not carry the indexed member name.
        """
        s, j = self.locate(i)
        shard, index = self.shards[s], self.indices[s]
        key = index.keys[j]
        begin, end = (int(v) for v in index.span[j])
        data = os.pread(self._fd(s), end - begin, begin)
        if len(data) != end - begin:
            raise _fail(shard, f"short read ({len(data)} of {end - begin} bytes: truncated tar?)", key)
        parts = []
        for (offset, size), name in zip(index.members[j].tolist(), index.names[j]):
            header = data[offset - _TAR_BLOCK : offset - _TAR_BLOCK + 100].split(b"\0", 1)[0]
            if header != name.encode()[:100]:
                raise _fail(shard, f"the tar holds {header[:60]!r} where the index puts {name}", key)
            parts.append(data[offset : offset + size])
        jpeg, params, landmarks = parts
        return RawSample(key, jpeg, read_label(PARAMS_EXT, params), read_label(LANDMARKS_EXT, landmarks))


@dataclass(frozen=True)
class EpochPlan:
    """One rank's share of one epoch: the canonical order and the positions this rank reads.

    Attributes:
        shards: every shard of the split, in manifest order (every rank gets the full list).
        counts: samples per shard (from the manifest; checked against the indices when reading starts).
        order: the epoch's canonical order (global sample indices).
        part: this rank's slice of it.
        seed: run seed (with `epoch` it fixes the order and the online augmentation).
        epoch: the epoch.
    """

    shards: tuple[Shard, ...]
    order: np.ndarray
    part: RankSlice
    seed: int
    epoch: int

    @property
    def batch_size(self) -> int:
        """Samples per rank in a full step."""
        return self.part.batch_size

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(global positions, global sample indices) this rank reads at `step` (0 = first step served)."""
        begin, end = self.part.positions(step)
        return np.arange(begin, end), self.order[begin:end]


def plan_epoch(
    shards: list[Shard],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    start_sample: int,
    rank: int,
    world_size: int,
    drop_last: bool,
    shuffle: str = "global",
) -> EpochPlan:
    """Fix this rank's part of epoch `epoch` from `start_sample` on (see `order` for the rules).

    Raises:
        ValueError: a rank outside [0, world_size), a non-positive batch size, a start outside the epoch, or an
            unknown shuffle.
    """
    counts = [s.count for s in shards]
    part = RankSlice(sum(counts), start_sample, batch_size, rank, world_size, drop_last)
    return EpochPlan(tuple(shards), epoch_order(counts, seed, epoch, shuffle), part, seed, epoch)


@dataclass
class PlannedEpoch:
    """What every loader holds: one rank's epoch plan, where batches go, and the online augmentation (None: off).

    `len()` is the number of batches iterating yields (the steps left from the plan's `start_sample`).
    """

    plan: EpochPlan
    device: torch.device
    jitter: OnlineJitter | None

    def __len__(self) -> int:
        return self.plan.part.steps

    def reader(self) -> SampleReader:
        """The checked random-access reader of the plan's shards (raises `ShardDataError` on a bad shard)."""
        return SampleReader(self.plan.shards)


def empty_batch(device: torch.device | str = "cpu") -> dict[str, object]:
    """A batch of zero samples, for the last step of a rank whose share of a partial global batch is empty."""
    return {
        "image": torch.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.float32, device=device),
        "params": torch.zeros((0, PARAMS_DIM), dtype=torch.float32, device=device),
        "landmarks": torch.zeros((0, LANDMARKS_DIM), dtype=torch.float32, device=device),
        "keys": [],
        "positions": [],
    }
