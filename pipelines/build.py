"""Build a shard set from a mix config: plan, build the missing shards, merge rejections, write the manifest.

`build_shards` is what the CLI (`r3fa shards build`) and the Prefect flow call. Re-running it on the same
folder resumes: shards whose `.done` marker matches the plan are skipped, temporaries of a killed run are
removed and unfinished shards are rebuilt from scratch, so the result is byte-identical to an uninterrupted
build with the same config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pipelines.files import TMP_SUFFIX
from pipelines.manifest import REJECTED_FILE, make_manifest, write_manifest
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


def remove_stale(out_dir: Path, plan: Plan, fingerprint: Callable[[ShardSpec], str]) -> list[ShardSpec]:
    """Delete what an interrupted run left (temporaries, files of shards without a matching `.done`) and
    return the shards still to build."""
    for tmp in [*out_dir.glob(f"*{TMP_SUFFIX}"), *(out_dir / PARTS_DIR).glob(f"*{TMP_SUFFIX}")]:
        tmp.unlink()
    todo = []
    for shard in plan.shards:
        files = ShardFiles.of(out_dir, shard.name)
        done = read_done(files)
        if done is not None and done.get("fingerprint") == fingerprint(shard):
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
    config_json = config.model_dump_json()
    todo = remove_stale(out, plan, lambda shard: shard.fingerprint(config_json))
    finished = plan.n_samples - sum(len(s.samples) for s in todo)
    report = progress or (lambda done, total: None)
    report(finished, plan.n_samples)

    def on_result(result: ShardResult) -> None:
        nonlocal finished
        finished += result.count + result.rejected
        report(finished, plan.n_samples)

    run_tasks(
        partial(build_shard, config=config, out_dir=out),
        todo,
        workers=workers,
        scheduler=scheduler,
        on_result=on_result,
        names=[f"shard-{s.name}" for s in todo],
    )
    merge_rejections(out, plan)
    manifest = make_manifest(config, plan, out)
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
