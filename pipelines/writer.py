"""The shard writer: samples into one WebDataset tar, byte-identical for identical input.

It knows nothing of plans, records or Dask: it takes each sample as its tar bytes (`sample_tar`, made from a key and
the bytes of its members in phase 1). Headers are fixed (mtime 0, uid/gid 0, no user or group names, mode 0644,
ustar format) and each sample's members are written in sorted extension order, so the same samples give the same
bytes. The tar is written under a temporary name, fsynced and renamed on `close()`, which also writes its DALI index
(`pipelines.index`) from the member offsets recorded while writing (the folder is fsynced by the caller, once for a
shard's files: `pipelines.shard.build_shard`); the index is therefore never derived from a re-scan, and the tar's
sha256 is hashed from the bytes as they are written (the shard's `.done` marker records it without reading the
tar back). The index lines are streamed to a temporary file as samples are written, so the
writer holds no per-sample state but the set of keys written (to refuse a repeated one).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from r3fa.atomic import TMP_SUFFIX, WRITE_BUFFER
from pipelines.index import IndexWriter, Member

HEADER_SIZE = tarfile.BLOCKSIZE  # a ustar member without extended headers has one 512-byte header


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_ENCODING, _ERRORS = "utf-8", "surrogateescape"  # what `tarfile.open` uses on this platform's file names
_HEAD = b"0000644\0" + b"0000000\0" * 2  # mode, uid, gid
_TAIL = b"00000000000\0" + b"        " + b"0" + b"\0" * 100 + b"ustar\x0000"  # then names, devices, prefix: NULs
_SIZE_AT, _CHECKSUM_AT = 124, 148  # the 12-byte size field; the 8-byte checksum, counted as spaces while summing
_FIXED_SUM = sum(_HEAD) + sum(_TAIL)  # the header's checksum is this plus the byte sums of the name and size
_BLANK = (b"\0" * 100 + _HEAD + b"\0" * 12 + _TAIL).ljust(HEADER_SIZE, b"\0")  # name, size, checksum to fill in


def tar_header(name: str, size: int) -> bytes:
    """The ustar header `tarfile` writes for `_tar_info(name, size)`, built without a `TarInfo` (the per-member
    cost of `tarfile.addfile` was a tenth of a build's phase 2); names over 100 bytes take `tarfile`'s path."""
    encoded = name.encode(_ENCODING, _ERRORS)
    if len(encoded) > 100 or size >= 8**11:
        return _tar_info(name, size).tobuf(tarfile.USTAR_FORMAT, _ENCODING, _ERRORS)
    size_field = b"%011o\0" % size
    header = bytearray(_BLANK)
    header[: len(encoded)] = encoded
    header[_SIZE_AT : _SIZE_AT + 12] = size_field
    header[_CHECKSUM_AT : _CHECKSUM_AT + 7] = b"%06o\0" % (_FIXED_SUM + sum(encoded) + sum(size_field))
    return bytes(header)


@dataclass(frozen=True)
class SampleTar:
    """One sample's members as a shard holds them: each a header, its data and padding to a whole block, in
    sorted extension order (`sample_tar`). Made in phase 1, so that writing a shard is copying bytes."""

    key: str
    data: bytes
    members: tuple[tuple[str, int, int], ...]  # (name, offset of its data within `data`, size) per member


def sample_tar(key: str, members: dict[str, bytes]) -> SampleTar:
    """The tar bytes of one sample.

    Args:
        key: the sample key (no dots or slashes).
        members: extension (without the leading dot, e.g. "params.f32") -> bytes.

    Raises:
        ValueError: a key with a dot or slash, or no members.
    """
    if "." in key or "/" in key or not key:
        raise ValueError(f"invalid sample key {key!r}: no dots or slashes")
    if not members:
        raise ValueError(f"sample {key!r} has no members")
    chunks, layout, offset = [], [], 0
    for extension in sorted(members):
        data, name = members[extension], f"{key}.{extension}"
        padding = -len(data) % tarfile.BLOCKSIZE
        chunks += [tar_header(name, len(data)), data, b"\0" * padding]
        layout.append((name, offset + HEADER_SIZE, len(data)))
        offset += HEADER_SIZE + len(data) + padding
    return SampleTar(key, b"".join(chunks), tuple(layout))


class ShardWriter:
    """Write one shard: `with ShardWriter(tar, idx) as w: w.write(sample_tar(key, {"jpg": ..., "json": ...}))`.

    Args:
        tar_path: the final tar path; data goes to `tar_path + ".tmp"` until `close()`.
        index_path: where `close()` writes the DALI index.
    """

    def __init__(self, tar_path: str | Path, index_path: str | Path):
        self.tar_path = Path(tar_path)
        self.index_path = Path(index_path)
        self._tmp = self.tar_path.with_name(self.tar_path.name + TMP_SUFFIX)
        self._file = open(self._tmp, "wb", buffering=WRITE_BUFFER)
        self._offset = 0
        self._sha256 = hashlib.sha256()
        self._index = IndexWriter(self.index_path)
        self._keys: set[str] = set()

    def write(self, sample: SampleTar) -> None:
        """Append one sample.

        Raises:
            ValueError: a key already written.
        """
        if sample.key in self._keys:
            raise ValueError(f"sample key {sample.key!r} written twice")
        self._keys.add(sample.key)
        self._file.write(sample.data)
        self._sha256.update(sample.data)
        self._index.add([Member(name, self._offset + at, size) for name, at, size in sample.members])
        self._offset += len(sample.data)

    @property
    def count(self) -> int:
        """Samples written so far."""
        return self._index.count

    @property
    def sha256(self) -> str:
        """The hex sha256 of the tar's bytes (complete after `close()`)."""
        return self._sha256.hexdigest()

    def close(self) -> None:
        """Finish the tar (two zero blocks, then zeros to a whole record, as `tarfile` does), fsync, rename it
        into place, then write the index (fsynced too); the names are durable once the caller fsyncs the folder."""
        end = self._offset + 2 * tarfile.BLOCKSIZE
        trailer = b"\0" * (2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE)
        self._file.write(trailer)
        self._sha256.update(trailer)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.tar_path)
        self._index.close()

    def abort(self) -> None:
        """Drop the partial tar and the index lines."""
        self._file.close()
        self._tmp.unlink(missing_ok=True)
        self._index.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
