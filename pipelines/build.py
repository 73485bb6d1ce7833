"""Build a shard set from a mix config: plan, build the missing shards, merge rejections, write the manifest.

`build_shards` is what the CLI (`r3fa shards build`) and the Prefect flow call. Re-running it on the same
folder resumes: shards whose `.done` marker matches the plan are skipped, temporaries of a killed run are
removed and unfinished shards are rebuilt from scratch, so the result is byte-identical to an uninterrupted
build with the same config.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from r3fa.atomic import TMP_SUFFIX
from pipelines.manifest import REJECTED_FILE, inputs_hash, make_manifest, write_manifest
from pipelines.mix import MixConfig, load_mix
from pipelines.plan import Plan, ShardSpec, make_plan
from pipelines.runner import run_tasks
from pipelines.shard import PARTS_DIR, ShardFiles, ShardResult, build_shard, read_done
from pipelines.tables import read_table, write_table
from r3fa.config import write_resolved

Progress = Callable[[int, int], None]  # (samples finished, samples planned)


@dataclass(frozen=True)
class BuildSummary:
    """The outcome of a build.

    Attributes:
        out_dir: the shard-set folder.
        shards: shards in the set.
        built: shards built by this run (the others were complete already).
        samples: samples in the set.
        planned: samples planned.
        rejected: planned samples set aside (see rejected.parquet).
        counts: the manifest's counts (by split, source, yaw bin).
        seconds: wall time of this run.
    """

    out_dir: Path
    shards: int
    built: int
    samples: int
    planned: int
    rejected: int
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        split = ", ".join(f"{k} {v}" for k, v in self.counts.get("by_split", {}).items())
        return (
            f"{self.samples} samples ({split}) in {self.shards} shards, {self.rejected} rejected, "
            f"{self.built} shards built in {self.seconds:.1f} s"
        )


def build_stamp(config: MixConfig, inputs_sha256: str) -> str:
    """What a shard's `.done` fingerprint is made from besides its keys: the config and the inputs hash (a
    changed config or input file rebuilds the shards)."""
    return f"{config.model_dump_json()}\n{inputs_sha256}"


def remove_stale(out_dir: Path, plan: Plan, stamp: str, name: str) -> list[ShardSpec]:
    """Delete what an earlier run left that this plan does not keep, and return the shards still to build.

    Removed: temporaries of a killed run, every file of a planned shard without a matching `.done`, and
    shard files of this name that the plan no longer has (e.g. a split that shrank).
    """
    for tmp in [*out_dir.glob(f"*{TMP_SUFFIX}"), *(out_dir / PARTS_DIR).glob(f"*{TMP_SUFFIX}")]:
        tmp.unlink()
    planned = {shard.name for shard in plan.shards}
    ours = re.compile(rf"{re.escape(name)}-(train|val)-\d{{6}}")
    for path in [*out_dir.glob(f"{name}-*"), *(out_dir / PARTS_DIR).glob(f"{name}-*")]:
        stem = path.name.split(".", 1)[0]
        if ours.fullmatch(stem) and stem not in planned:
            path.unlink()
    todo = []
    for shard in plan.shards:
        files = ShardFiles.of(out_dir, shard.name)
        done = read_done(files)
        if done is not None and done.get("fingerprint") == shard.fingerprint(stamp):
            continue
        for path in files.outputs():
            path.unlink(missing_ok=True)
        todo.append(shard)
    return todo


def merge_rejections(out_dir: Path, plan: Plan) -> None:
    """Concatenate the shards' rejection parts, in plan order, into rejected.parquet."""
    parts = [ShardFiles.of(out_dir, shard.name).rejected for shard in plan.shards]
    write_table(out_dir / REJECTED_FILE, read_table(parts, "rejected").to_pylist(), "rejected")


def build_shards(
    config: MixConfig | str | Path,
    out_dir: str | Path,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> BuildSummary:
    """Build (or finish building) the shard set of a mix config.

    Args:
        config: a `MixConfig` or the path of its YAML.
        out_dir: the shard-set folder (created).
        workers: Dask worker processes of a local cluster (one thread each); 0 builds in this process.
        scheduler: address of an existing Dask scheduler instead of a local cluster.
        progress: called with (samples finished, samples planned) at the start and after each shard.

    Returns:
        The summary; the folder holds the shards, rejected.parquet, manifest.json and config.resolved.yaml.
    """
    start = time.perf_counter()
    config = config if isinstance(config, MixConfig) else load_mix(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_resolved(config, out)
    plan = make_plan(config)
    inputs = inputs_hash(plan.items)
    stamp = build_stamp(config, inputs[0])
    todo = remove_stale(out, plan, stamp, config.name)
    finished = plan.n_samples - sum(len(s.samples) for s in todo)
    report = progress or (lambda done, total: None)
    report(finished, plan.n_samples)

    def on_result(result: ShardResult) -> None:
        nonlocal finished
        finished += result.count + result.rejected
        report(finished, plan.n_samples)

    run_tasks(
        partial(build_shard, config=config, out_dir=out, stamp=stamp),
        todo,
        workers=workers,
        scheduler=scheduler,
        on_result=on_result,
        names=[f"shard-{s.name}" for s in todo],
    )
    merge_rejections(out, plan)
    manifest = make_manifest(config, plan, out, inputs)
    write_manifest(manifest, out)
    counts = manifest["counts"]
    return BuildSummary(
        out_dir=out,
        shards=len(plan.shards),
        built=len(todo),
        samples=counts["samples"],
        planned=plan.n_samples,
        rejected=counts["rejected"],
        counts=counts,
        seconds=time.perf_counter() - start,
    )
