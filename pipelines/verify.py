"""Check a shard set on disk against everything its manifest claims.

`verify_shard_set` re-reads everything (tars member by member, one shard at a time) and returns a list of
findings, one human-readable line each; an empty list means the set is intact. What is checked:

- the manifest: JSON, its version and its model (`r3fa.shard_contract.ShardSetManifest`, every field);
- every file by hash: each tar (manifest and `.done`), each Parquet (sha256 and size), rejected.parquet;
- per shard: tar members (regular files, safe contiguous `KEY.ext` names, the four expected members), the DALI
  index against the tar's real offsets, the Parquet rows against the tar (keys and order, JPEG hashes, label
  bytes, split and shard, and every column the `KEY.json` member repeats: source, yaw/pitch/roll, ...);
- the totals: counts per split, source, |yaw| bin and synthetic, and the whitening, recomputed from the
  Parquet rows; `planned == samples + rejected + surplus`; per stage and per source and stage
  `planned == delivered + rejected + surplus`, delivered real/synthetic against the rows, a target met
  within `target_tolerance`; per source `inputs == accepted + rejected + surplus`; rejected.parquet's row
  count and that no row is a delivered sample; shard numbers without gaps; tars in the folder that the
  manifest does not list; no Parquet file at the top of the folder but the shards' (third-party readers
  glob `DIR/*.parquet`).

Any file that cannot be read (a truncated Parquet, a garbage tar, a manifest that is not JSON) is a finding,
never a traceback. It shares no code with the writer beyond the shard-set contract (`r3fa.shard_contract`: member
names, the manifest's model) and the index text format, so a writer bug shows up as a finding rather than being
repeated.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.index import Member, format_index
from pipelines.shard import ShardFiles
from r3fa.atomic import read_marker
from r3fa.errors import UserError
from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.provenance import file_sha256
from r3fa.shard_contract import (
    IMAGE_EXT,
    LABEL_DTYPE,
    LANDMARKS_EXT,
    META_EXT,
    PARAMS_DIM,
    PARAMS_EXT,
    SAMPLE_MEMBERS,
    ManifestError,
    ShardEntry,
    ShardSetManifest,
    load_manifest,
)

# Whitening recomputed in float64 from float32 labels, against the manifest's float32 copy: relative to std.
WHITENING_RTOL = 1e-4
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHARD_NAME = re.compile(r"(?P<name>.+)-(?P<split>train|val)-(?P<index>[0-9]{6})\.tar")
# Parquet columns that the tar's KEY.json repeats, compared exactly (json name -> column).
_JSON_COLUMNS = {
    "key": "key", "split": "split", "source": "source", "subject_id": "subject_id", "parent_key": "parent_key",
    "synthetic": "synthetic", "fitted": "fitted", "yaw_increment": "yaw_increment", "label_nme": "label_nme",
}  # fmt: skip


@dataclass
class _Totals:
    """Counts and whitening sums recomputed from the Parquet rows, shard by shard."""

    shift: np.ndarray
    counts: Counter = field(default_factory=Counter)
    keys: set[str] = field(default_factory=set)
    n_train: int = 0
    s1: np.ndarray = field(default_factory=lambda: np.zeros(PARAMS_DIM))
    s2: np.ndarray = field(default_factory=lambda: np.zeros(PARAMS_DIM))

    def add(self, split: str, rows: list[dict]) -> None:
        bins = yaw_bin(np.array([row["yaw"] for row in rows], np.float64)) if rows else []
        self.keys.update(row["key"] for row in rows)
        for row, b in zip(rows, bins):
            self.counts.update(["samples", f"by_split/{split}", f"by_source/{row['source']}",
                                f"by_yaw_bin/{BIN_NAMES[b]}", f"by_split_yaw_bin/{split}/{BIN_NAMES[b]}"])  # fmt: skip
            self.counts["synthetic"] += bool(row["synthetic"])
        if split == "train" and rows:
            params = np.array([row["params"] for row in rows], np.float64) - self.shift
            self.n_train += len(rows)
            self.s1 += params.sum(axis=0)
            self.s2 += (params**2).sum(axis=0)

    def whitening(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) as the builder defines them: population std, constant dimensions get std 1."""
        n = max(self.n_train, 1)
        mean = self.s1 / n
        std = np.sqrt(np.maximum(self.s2 / n - mean**2, 0.0))
        std[std < 1e-8] = 1.0
        return self.shift + mean, std


def _tar_samples(path: Path) -> Iterator[tuple[str, list[Member], dict[str, bytes]]]:
    """(key, members for the index, member bytes by extension) per sample, in tar order, one at a time.

    Raises:
        ValueError: a member that is not a regular file, an unsafe name, or members of a sample not contiguous.
    """
    seen: set[str] = set()
    key, members, data = None, [], {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                raise ValueError(f"member {info.name} is not a regular file")
            name, _, extension = info.name.partition(".")
            if not _SAFE_KEY.fullmatch(name):
                raise ValueError(f"unsafe member name {info.name!r}")
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


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and (a == b or math.isnan(a) and math.isnan(b))
    return a == b


def _check_meta(name: str, key: str, row: dict, raw: bytes) -> list[str]:
    """The Parquet row against the tar's KEY.json member."""
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{name}: {key}.json is not JSON ({err})"]
    if not isinstance(meta, dict):
        return [f"{name}: {key}.json is not an object"]
    differ = [col for field_, col in _JSON_COLUMNS.items() if field_ in meta and col in row and not _same(meta[field_], row[col])]
    pose = meta.get("pose_deg")
    if isinstance(pose, list) and len(pose) == 3:
        differ += [col for col, v in zip(("pitch", "yaw", "roll"), pose) if col in row and not _same(v, row[col])]
    if "augment" in meta and "augment" in row:
        try:
            if json.loads(row["augment"]) != meta["augment"]:
                differ.append("augment")
        except (TypeError, json.JSONDecodeError):
            differ.append("augment")
    return [f"{name}: {key}: Parquet column(s) {', '.join(differ)} differ from {key}.json"] if differ else []


def _check_sample(name: str, split: str, row: dict | None, key: str, sample: dict[str, bytes]) -> list[str]:
    if row is None or row["key"] != key:
        return [f"{name}: tar sample {key} is not the Parquet row at its position ({row and row['key']})"]
    if set(sample) != set(SAMPLE_MEMBERS):
        return [f"{name}: {key} has members {sorted(sample)}"]
    problems = []
    if hashlib.sha256(sample[IMAGE_EXT]).hexdigest() != row["jpeg_sha256"]:
        problems.append(f"{name}: {key}.jpg differs from its jpeg_sha256")
    for ext, column in ((PARAMS_EXT, "params"), (LANDMARKS_EXT, "landmarks")):
        if sample[ext] != np.asarray(row[column], LABEL_DTYPE).tobytes():
            problems.append(f"{name}: {key}.{ext} differs from the Parquet column {column}")
    if row["split"] != split or row["shard"] != name:
        problems.append(f"{name}: {key} has split/shard {row['split']}/{row['shard']} in the Parquet")
    return problems + _check_meta(name, key, row, sample[META_EXT])


def _check_files(name: str, entry: ShardEntry, files: ShardFiles) -> list[str]:
    """Hashes and sizes of a shard's files against the manifest and its `.done` marker."""
    problems = []
    digest = file_sha256(files.tar)
    if digest != entry.sha256:
        problems.append(f"{name}: sha256 {digest[:12]}... differs from the manifest's {entry.sha256[:12]}...")
    done = read_marker(files.done) or {}
    if done.get("tar_sha256") != entry.sha256 or done.get("count") != entry.count:
        problems.append(f"{name}: .done marker disagrees with the manifest")
    size, digest = files.parquet.stat().st_size, file_sha256(files.parquet)
    if size != entry.parquet_bytes or digest != entry.parquet_sha256:
        problems.append(f"{name}: {files.parquet.name} differs from the manifest (sha256 {digest[:12]}..., {size} bytes)")
    return problems


def _check_shard(out: Path, entry: ShardEntry, totals: _Totals) -> list[str]:
    name = entry.file
    files = ShardFiles.of(out, name.removesuffix(".tar"))
    for path in (files.tar, files.idx, files.parquet, files.done):
        if not path.is_file():
            return [f"{name}: missing {path.name}"]
    problems = _check_files(name, entry, files)
    try:
        rows = pq.read_table(files.parquet).to_pylist()
    except Exception as err:  # any unreadable Parquet is a finding
        return [*problems, f"{name}: unreadable {files.parquet.name} ({type(err).__name__}: {err})"]
    totals.add(entry.split, rows)
    index: list[list[Member]] = []
    try:
        for position, (key, members, sample) in enumerate(_tar_samples(files.tar)):
            index.append(members)
            row = rows[position] if position < len(rows) else None
            problems += _check_sample(name, entry.split, row, key, sample)
    except (ValueError, OSError, EOFError, tarfile.TarError) as err:
        return [*problems, f"{name}: unreadable tar ({type(err).__name__}: {err})"]
    if not len(index) == len(rows) == entry.count:
        problems.append(f"{name}: {len(index)} samples in the tar, {len(rows)} Parquet rows, {entry.count} in the manifest")
    try:
        indexed = files.idx.read_text()
    except (OSError, UnicodeDecodeError) as err:
        indexed = f"unreadable ({err})"
    if indexed != format_index(index):
        problems.append(f"{name}: {files.idx.name} does not match the tar's member offsets")
    return problems


def _check_numbering(manifest: ShardSetManifest) -> list[str]:
    """Shards are numbered 0..n-1 per split: a gap is a shard removed together with its manifest entry."""
    found: dict[tuple[str, str], set[int]] = {}
    problems = []
    for entry in manifest.shards:
        match = _SHARD_NAME.fullmatch(entry.file)
        if match is None or match["split"] != entry.split:
            problems.append(f"{entry.file}: not a shard name of split {entry.split}")
            continue
        found.setdefault((match["name"], match["split"]), set()).add(int(match["index"]))
    for (name, split), numbers in sorted(found.items()):
        missing = sorted(set(range(max(numbers) + 1)) - numbers)
        if missing:
            problems.append(f"manifest: {split} shard(s) {', '.join(f'{name}-{split}-{i:06d}' for i in missing)} not listed")
    return problems


def _check_counts(manifest: ShardSetManifest, totals: _Totals) -> list[str]:
    counts = manifest.counts
    claimed = Counter({"samples": counts.samples, "synthetic": counts.synthetic})
    groups = {"by_split": counts.by_split.model_dump(), "by_source": counts.by_source, "by_yaw_bin": counts.by_yaw_bin,
              "by_split_yaw_bin": counts.by_split_yaw_bin}  # fmt: skip
    for group, values in groups.items():
        claimed.update({f"{group}/{k}": v for k, v in values.items()})
    problems = [
        f"manifest: counts.{k.replace('/', '.', 1)} is {claimed[k]}, the Parquet rows give {totals.counts[k]}"
        for k in sorted(set(claimed) | set(totals.counts))
        if claimed[k] != totals.counts[k]
    ]
    listed = sum(entry.count for entry in manifest.shards)
    if listed != counts.samples:
        problems.append(f"manifest: shard counts add up to {listed}, counts.samples is {counts.samples}")
    if counts.planned != counts.samples + counts.rejected + counts.surplus:
        problems.append(f"manifest: counts.planned {counts.planned} != samples {counts.samples} + rejected "
                        f"{counts.rejected} + surplus {counts.surplus} (a shard removed with its entry, or "
                        "edited counts)")  # fmt: skip
    problems += _check_stages(manifest)
    if counts.samples == 0:
        problems.append("manifest: the set holds no samples")
    return problems


def _check_whitening(manifest: ShardSetManifest, totals: _Totals) -> list[str]:
    mean, std = np.asarray(manifest.whitening.mean, np.float64), np.asarray(manifest.whitening.std, np.float64)
    if not (std > 0).all():  # finite: the model refuses anything else
        return ["manifest: whitening has a std <= 0"]
    if totals.n_train == 0:
        return []
    true_mean, true_std = totals.whitening()
    bad = np.flatnonzero(
        (np.abs(mean - true_mean) > WHITENING_RTOL * true_std) | (np.abs(std - true_std) > WHITENING_RTOL * true_std)
    )
    if len(bad):
        return [f"manifest: whitening differs from the train rows' statistics in dimension(s) {bad.tolist()[:10]}"]
    return []


def _check_stages(manifest: ShardSetManifest) -> list[str]:
    """Per stage and per source and stage: planned = delivered + rejected + surplus; the delivered real and
    synthetic samples are the set's; targets met within the tolerance; per source inputs add up."""
    counts, problems = manifest.counts, []
    groups = {**{f"by_stage.{k}": v for k, v in counts.by_stage.items()},
              **{f"by_source_stage.{k}": v for k, v in counts.by_source_stage.items()}}  # fmt: skip
    for name, c in groups.items():
        if c.planned != c.delivered + c.rejected + c.surplus:
            problems.append(f"manifest: counts.{name}: planned {c.planned} != delivered + rejected + surplus")
    stages = counts.by_stage
    delivered = {"real": counts.samples - counts.synthetic, "synthetic": counts.synthetic}
    for name, n in delivered.items():
        if name in stages and stages[name].delivered != n:
            problems.append(f"manifest: counts.by_stage.{name}.delivered {stages[name].delivered}, "
                            f"the set holds {n}")  # fmt: skip
    tolerance = manifest.config.get("target_tolerance", 0.0)
    for name, c in stages.items():
        if c.target is not None and not (1.0 - tolerance) * c.target <= c.delivered <= c.target:
            problems.append(f"manifest: counts.by_stage.{name}: delivered {c.delivered} misses target {c.target}")
    for source, c in manifest.inputs.by_source.items():
        if c.inputs != c.accepted + c.rejected + c.surplus:
            problems.append(f"manifest: inputs.by_source.{source}: inputs != accepted + rejected + surplus")
    return problems


def _check_rejected(out: Path, manifest: ShardSetManifest, keys: set[str]) -> list[str]:
    name = manifest.rejected_file
    path = out / name
    if not path.is_file():
        return [f"{name}: missing"]
    if file_sha256(path) != manifest.rejected_sha256:
        return [f"{name}: sha256 differs from the manifest's rejected_sha256"]
    try:
        rejected = pq.read_table(path, columns=["key"]).column("key").to_pylist()
    except Exception as err:  # any unreadable Parquet is a finding
        return [f"{name}: unreadable ({type(err).__name__}: {err})"]
    problems = []
    if len(rejected) != manifest.counts.rejected:
        problems.append(f"{name}: {len(rejected)} rows, counts.rejected is {manifest.counts.rejected}")
    both = sorted(keys.intersection(rejected))
    if both:
        problems.append(f"{name}: {len(both)} rejected key(s) are also samples, e.g. {both[0]}")
    return problems


def _check_top_parquet(out: Path, manifest: ShardSetManifest) -> list[str]:
    """`DIR/*.parquet` must be exactly the shards' tables (what DuckDB's `read_parquet('DIR/*.parquet')` reads)."""
    listed = {entry.parquet for entry in manifest.shards}
    return [f"{p.name}: a Parquet file in the folder that is not a shard's table" for p in sorted(out.glob("*.parquet"))
            if p.name not in listed]  # fmt: skip


def verify_shard_set(out_dir: str | Path) -> list[str]:
    """Every finding in a shard set (empty when intact); see the module docstring for what is checked.

    Raises:
        UserError: `out_dir` is not a folder.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise UserError(f"{out}: not a folder; give the folder that `r3fa shards build --out` wrote")
    try:
        manifest = load_manifest(out)
    except ManifestError as err:
        return err.problems
    totals = _Totals(shift=np.asarray(manifest.whitening.mean, np.float64))
    problems = []
    for entry in manifest.shards:
        try:
            problems += _check_shard(out, entry, totals)
        except Exception as err:  # a file that breaks a reader is a finding, never a traceback
            problems.append(f"{entry.file}: could not be checked ({type(err).__name__}: {err})")
    listed = {entry.file for entry in manifest.shards}
    problems += [f"{p.name}: not listed in the manifest" for p in sorted(out.glob("*.tar")) if p.name not in listed]
    problems += _check_numbering(manifest) + _check_counts(manifest, totals) + _check_whitening(manifest, totals)
    problems += _check_rejected(out, manifest, totals.keys) + _check_top_parquet(out, manifest)
    return problems
