"""`manifest.json` of a shard set: what went in, what came out, and the training split's whitening.

Written once every shard is complete, from the shards' `.done` markers and their Parquet files (streamed one
file at a time, so memory does not grow with the dataset); never from task results, so that a resumed build
writes the same manifest as an uninterrupted one. It fills `r3fa.shard_contract.ShardSetManifest` (the model
every reader loads, with `MANIFEST_VERSION`; `schemas/manifest.schema.json` is generated from it) and writes
its canonical bytes. Inputs are hashed by metadata, not content: sha256 over the sorted lines
`path-relative-to-data-root size mtime_ns` of every input file (reading 122k images to hash them would cost
more than the build's ingest); a file that cannot be stat'ed (a dangling symlink, a missing or unreadable
file: ingest rejects it) is hashed as `path missing <error>` instead, so hashing never fails.
"Every input is a sample or a rejection": `inputs.by_source` counts, per source, the inputs discovered,
accepted (at least one sample in the set), rejected (set aside while discovering, or no candidate made) and
surplus (candidates made, all cut as surplus by the exact counts of `pipelines.cut`). `counts.by_stage` and
`counts.by_source_stage` give target, planned, delivered, rejected and surplus samples.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r3fa.atomic import read_marker, write_bytes_atomic
from pipelines.mix import MixConfig
from pipelines.cut import Cut
from pipelines.plan import Plan, ShardSpec
from pipelines.shard import ShardFiles
from pipelines.tables import schema_version
from r3fa.provenance import code_version, file_sha256
from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.params import PARAM_DIM, Whitening
from r3fa.paths import data_root
from r3fa.readers import SourceItem
from r3fa.records import DATASET_CONVENTION
from r3fa.shard_contract import (
    MANIFEST_FILE,
    MANIFEST_VERSION,
    REJECTED_FILE,
    Counts,
    Inputs,
    ShardEntry,
    ShardSetManifest,
    manifest_json,
)

INPUT_HASH_METHOD = (
    "sha256 of sorted lines 'path size mtime_ns' of every input file (paths relative to the data root; "
    "'path missing <error>' for a file that cannot be stat'ed)"
)


def inputs_hash(items: Sequence[SourceItem]) -> tuple[str, int]:
    """(sha256, number of files) of the input files' paths, sizes and modification times."""
    try:
        root = data_root()
    except FileNotFoundError:
        root = None
    under_root = os.path.join(os.path.normpath(root), "") if root else None  # "<root>/": shown relative to it
    lines = []
    for path in sorted({p for item in items for p in (item.image_path, item.annotation_path, item.landmark_path) if p}):
        path = os.path.normpath(path)
        shown = path[len(under_root) :] if under_root and path.startswith(under_root) else path
        try:
            stat = os.stat(path)
        except OSError as err:
            lines.append(f"{shown} missing {type(err).__name__}")
        else:
            lines.append(f"{shown} {stat.st_size} {stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


def build_code_version() -> str:
    """The code version recorded in the manifest: `$R3FA_CODE_VERSION` when set (reproducible builds, as
    SOURCE_DATE_EPOCH for timestamps), else `r3fa.provenance.code_version()` (version + commit + dirty)."""
    return os.environ.get("R3FA_CODE_VERSION") or code_version()


class _ParamStats:
    """Mean and variance of 62-d labels merged file by file (Chan et al.'s parallel update)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, np.zeros(PARAM_DIM), np.zeros(PARAM_DIM)

    def add(self, params: np.ndarray) -> None:
        if len(params) == 0:
            return
        n_b, mean_b = len(params), params.mean(axis=0)
        m2_b = ((params - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def whitening(self, name: str) -> Whitening:
        """Statistics as `Whitening.fit` computes them (population std; constant dimensions get std 1)."""
        std = np.sqrt(self.m2 / max(self.n, 1))
        std[std < 1e-8] = 1.0
        return Whitening(name, self.mean.astype(np.float32), std.astype(np.float32))


def _row_groups(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The columns of a shard's Parquet, one row group at a time (the manifest step's memory is one row group's,
    not one shard's)."""
    with pq.ParquetFile(path) as parquet:
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group, columns=columns).to_batches(max_chunksize=None)


def _yaw_bins(yaw: np.ndarray) -> Counter:
    return Counter(BIN_NAMES[b] for b in yaw_bin(yaw))


def input_counts(
    plan: Plan, accepted_items: set[str], surplus_items: set[str] = frozenset()
) -> dict[str, dict[str, int]]:
    """Per source: `inputs` discovered, `accepted` (items with at least one sample in the set, by item key),
    `surplus` (items with candidates made but all cut as surplus) and `rejected` (inputs set aside while
    discovering, and items none of whose candidates was made), so that `inputs == accepted + rejected + surplus`."""
    counts = {
        source: {"inputs": n, "accepted": 0, "rejected": 0, "surplus": 0} for source, n in plan.inputs_by_source().items()
    }
    for rejection in plan.rejected:
        counts[rejection.source]["rejected"] += 1
    for item in plan.items:
        outcome = "accepted" if item.key in accepted_items else "surplus" if item.key in surplus_items else "rejected"
        counts[item.source][outcome] += 1
    return counts


def make_manifest(
    config: MixConfig, plan: Plan, shards: Sequence[ShardSpec], cut: Cut, out_dir: str | Path, inputs: tuple[str, int]
) -> ShardSetManifest:
    """The manifest of a complete shard set (every shard has its `.done`).

    Args:
        config: the mix.
        plan: its plan.
        shards: the shards the cut's delivered samples were written to.
        cut: the cut (`pipelines.cut.cut_candidates`).
        out_dir: the shard-set folder.
        inputs: (sha256, number of files) of the inputs (`inputs_hash`).

    `counts.rejected` counts every row of rejected.parquet (the inputs set aside while discovering too), and
    `counts.planned` the planned candidates plus those inputs, so that `planned == samples + rejected + surplus`.

    Raises:
        FileNotFoundError: a planned shard is not complete.
    """
    stats = _ParamStats()
    by_split, by_source, by_bin, by_split_bin = Counter(), Counter(), Counter(), Counter()
    synthetic = 0
    entries = []
    for shard in shards:
        files = ShardFiles.of(out_dir, shard.name)
        done = read_marker(files.done)
        if done is None:
            raise FileNotFoundError(f"{files.done}: shard {shard.name} is not complete")
        for batch in _row_groups(files.parquet, ["source", "synthetic", "yaw", "params"]):
            by_split[shard.split] += batch.num_rows
            by_source.update(batch.column("source").to_pylist())
            bins = _yaw_bins(batch.column("yaw").to_numpy())
            by_bin.update(bins)
            by_split_bin.update({f"{shard.split}/{b}": n for b, n in bins.items()})
            synthetic += sum(batch.column("synthetic").to_pylist())
            if shard.split == "train":
                stats.add(batch.column("params").flatten().to_numpy().reshape(-1, PARAM_DIM).astype(np.float64))
        entries.append(ShardEntry(
            file=files.tar.name,
            split=shard.split,
            count=done["count"],
            sha256=done["tar_sha256"],
            idx=files.idx.name,
            parquet=files.parquet.name,
            parquet_sha256=file_sha256(files.parquet),
            parquet_bytes=files.parquet.stat().st_size,
        ))  # fmt: skip
    digest, n_files = inputs
    return ShardSetManifest(
        manifest_version=MANIFEST_VERSION,
        name=config.name,
        code_version=build_code_version(),
        crop_convention=DATASET_CONVENTION,
        sample_schema_version=schema_version(),
        config=config.model_dump(mode="json"),
        inputs=Inputs(
            method=INPUT_HASH_METHOD,
            sha256=digest,
            files=n_files,
            items=len(plan.items),
            items_by_source=dict(sorted(Counter(item.source for item in plan.items).items())),
            by_source=input_counts(plan, cut.delivered_items, cut.surplus_items),
        ),
        whitening=stats.whitening(f"{config.name}-train").to_dict(),
        counts=Counts(
            samples=sum(by_split.values()),
            planned=plan.n_samples + len(plan.rejected),
            rejected=len(cut.rejections) + len(plan.rejected),
            surplus=sum(c["surplus"] for c in cut.by_stage.values()),
            by_stage=cut.by_stage,
            by_source_stage=cut.by_source,
            synthetic=synthetic,
            by_split={split: by_split.get(split, 0) for split in ("train", "val")},
            by_source=dict(sorted(by_source.items())),
            by_yaw_bin={b: by_bin.get(b, 0) for b in BIN_NAMES},
            by_split_yaw_bin={f"{s}/{b}": by_split_bin.get(f"{s}/{b}", 0) for s in ("train", "val") for b in BIN_NAMES},
        ),
        rejected_file=REJECTED_FILE,
        rejected_sha256=file_sha256(Path(out_dir) / REJECTED_FILE),
        shards=entries,
    )


def write_manifest(manifest: ShardSetManifest, out_dir: str | Path) -> Path:
    """Write `manifest.json` atomically (`r3fa.shard_contract.manifest_json`: equal manifests are equal bytes)."""
    path = Path(out_dir) / MANIFEST_FILE
    write_bytes_atomic(path, manifest_json(manifest))
    return path
