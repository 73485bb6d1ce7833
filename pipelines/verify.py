"""Check a shard set on disk: every tar against its sha256, its DALI index, its Parquet rows and the manifest.

`verify_shard_set` re-reads everything (tars member by member, one shard at a time) and returns a list of
human-readable mismatches; an empty list means the set is intact. It shares no code with the writer beyond
the file names and the index text format, so a writer bug shows up as a mismatch rather than being repeated.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.index import Member, format_index
from pipelines.manifest import MANIFEST_VERSION
from pipelines.shard import IMAGE_EXT, LANDMARKS_EXT, PARAMS_EXT, ShardFiles, read_done
from r3fa.evaluation import file_sha256


def _tar_samples(path: Path) -> tuple[list[str], list[list[Member]], dict[str, dict[str, bytes]], list[str]]:
    """Keys in order, members per sample (for the index), member bytes by key and extension, problems."""
    keys, members, data, problems = [], [], {}, []
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                problems.append(f"{path.name}: member {info.name} is not a regular file")
                continue
            key, _, extension = info.name.partition(".")
            if not keys or keys[-1] != key:
                if key in data:
                    problems.append(f"{path.name}: members of {key} are not contiguous")
                keys.append(key)
                members.append([])
                data[key] = {}
            members[-1].append(Member(info.name, info.offset_data, info.size))
            data[key][extension] = tar.extractfile(info).read()
    return keys, members, data, problems


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
    keys, members, data, tar_problems = _tar_samples(files.tar)
    problems += tar_problems
    if len(keys) != entry["count"]:
        problems.append(f"{name}: {len(keys)} samples in the tar, {entry['count']} in the manifest")
    if files.idx.read_text() != format_index(members):
        problems.append(f"{name}: {files.idx.name} does not match the tar's member offsets")
    table = pq.read_table(files.parquet)
    rows = table.to_pylist()
    if [r["key"] for r in rows] != keys:
        problems.append(f"{name}: Parquet keys differ from the tar's (order or content)")
        return problems
    for row in rows:
        sample, key = data[row["key"]], row["key"]
        if set(sample) != {IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT, "json"}:
            problems.append(f"{name}: {key} has members {sorted(sample)}")
            continue
        if hashlib.sha256(sample[IMAGE_EXT]).hexdigest() != row["jpeg_sha256"]:
            problems.append(f"{name}: {key}.jpg differs from its jpeg_sha256")
        for ext, column in ((PARAMS_EXT, "params"), (LANDMARKS_EXT, "landmarks")):
            if sample[ext] != np.asarray(row[column], "<f4").tobytes():
                problems.append(f"{name}: {key}.{ext} differs from the Parquet column {column}")
        if row["split"] != entry["split"] or row["shard"] != name:
            problems.append(f"{name}: {key} has split/shard {row['split']}/{row['shard']} in the Parquet")
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
