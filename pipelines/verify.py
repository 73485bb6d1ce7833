"""Check a shard set on disk: every tar against its sha256, its DALI index, its Parquet rows and the manifest.

`verify_shard_set` re-reads everything (tars member by member, one shard at a time) and returns a list of
human-readable mismatches; an empty list means the set is intact. It shares no code with the writer beyond
the file names and the index text format, so a writer bug shows up as a mismatch rather than being repeated.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.index import Member, format_index
from pipelines.manifest import MANIFEST_VERSION
from pipelines.shard import IMAGE_EXT, LANDMARKS_EXT, PARAMS_EXT, ShardFiles, read_done
from r3fa.provenance import file_sha256


def _tar_samples(path: Path) -> Iterator[tuple[str, list[Member], dict[str, bytes]]]:
    """(key, members for the index, member bytes by extension) per sample, in tar order, one at a time.

    Raises:
        ValueError: a member that is not a regular file, or a sample whose members are not contiguous.
    """
    seen: set[str] = set()
    key, members, data = None, [], {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                raise ValueError(f"member {info.name} is not a regular file")
            name, _, extension = info.name.partition(".")
            if name != key:
                if key is not None:
                    yield key, members, data
                if name in seen:
                    raise ValueError(f"members of {name} are not contiguous")
                seen.add(name)
                key, members, data = name, [], {}
            members.append(Member(info.name, info.offset_data, info.size))
            data[extension] = tar.extractfile(info).read()
    if key is not None:
        yield key, members, data


def _check_sample(name: str, split: str, row: dict | None, key: str, sample: dict[str, bytes]) -> list[str]:
    if row is None or row["key"] != key:
        return [f"{name}: tar sample {key} is not the Parquet row at its position ({row and row['key']})"]
    if set(sample) != {IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT, "json"}:
        return [f"{name}: {key} has members {sorted(sample)}"]
    problems = []
    if hashlib.sha256(sample[IMAGE_EXT]).hexdigest() != row["jpeg_sha256"]:
        problems.append(f"{name}: {key}.jpg differs from its jpeg_sha256")
    for ext, column in ((PARAMS_EXT, "params"), (LANDMARKS_EXT, "landmarks")):
        if sample[ext] != np.asarray(row[column], "<f4").tobytes():
            problems.append(f"{name}: {key}.{ext} differs from the Parquet column {column}")
    if row["split"] != split or row["shard"] != name:
        problems.append(f"{name}: {key} has split/shard {row['split']}/{row['shard']} in the Parquet")
    return problems


def _check_shard(out: Path, entry: dict) -> list[str]:
    name = entry["file"]
    files = ShardFiles.of(out, name.removesuffix(".tar"))
    for path in (files.tar, files.idx, files.parquet, files.done):
        if not path.is_file():
            return [f"{name}: missing {path.name}"]
    problems = []
    digest = file_sha256(files.tar)
    if digest != entry["sha256"]:
        problems.append(f"{name}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}...")
    done = read_done(files) or {}
    if done.get("tar_sha256") != entry["sha256"] or done.get("count") != entry["count"]:
        problems.append(f"{name}: .done marker disagrees with the manifest")
    rows = pq.read_table(files.parquet).to_pylist()
    index: list[list[Member]] = []
    try:
        for position, (key, members, sample) in enumerate(_tar_samples(files.tar)):
            index.append(members)
            row = rows[position] if position < len(rows) else None
            problems += _check_sample(name, entry["split"], row, key, sample)
    except (ValueError, tarfile.TarError) as err:
        return [*problems, f"{name}: unreadable tar ({err})"]
    if not len(index) == len(rows) == entry["count"]:
        problems.append(f"{name}: {len(index)} samples in the tar, {len(rows)} Parquet rows, {entry['count']} in the manifest")
    if files.idx.read_text() != format_index(index):
        problems.append(f"{name}: {files.idx.name} does not match the tar's member offsets")
    return problems


def verify_shard_set(out_dir: str | Path) -> list[str]:
    """Every mismatch found in a shard set (empty when intact).

    Checks: the manifest's version and totals; per shard, the tar's sha256 (manifest and `.done`), its members
    (regular files, contiguous per sample, the four expected extensions), the DALI index against the tar's
    real offsets, the Parquet rows against the tar (keys and order, JPEG hashes, label bytes, split); the
    rejected.parquet row count; tars in the folder that the manifest does not list.
    """
    out = Path(out_dir)
    path = out / "manifest.json"
    if not path.is_file():
        return [f"{path}: missing"]
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return [f"{path}: not JSON ({err})"]
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        return [f"{path}: manifest_version {manifest.get('manifest_version')}, expected {MANIFEST_VERSION}"]
    problems = []
    for entry in manifest["shards"]:
        problems += _check_shard(out, entry)
    listed = {entry["file"] for entry in manifest["shards"]}
    problems += [f"{p.name}: not listed in the manifest" for p in sorted(out.glob("*.tar")) if p.name not in listed]
    total = sum(entry["count"] for entry in manifest["shards"])
    if total != manifest["counts"]["samples"]:
        problems.append(f"manifest: shard counts add up to {total}, counts.samples is {manifest['counts']['samples']}")
    rejected = out / manifest["rejected_file"]
    if not rejected.is_file():
        problems.append(f"{rejected.name}: missing")
    elif pq.ParquetFile(rejected).metadata.num_rows != manifest["counts"]["rejected"]:
        problems.append(f"{rejected.name}: row count differs from counts.rejected")
    return problems
