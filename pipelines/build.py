"""Build a shard set from a mix config: plan, build the missing shards, merge rejections, write the manifest.

`build_shards` is what the CLI (`r3fa shards build`) and the Prefect flow call. Re-running it on the same
folder resumes: shards whose `.done` marker matches the plan are skipped, this builder's temporaries of a
killed run are removed and unfinished shards are rebuilt from scratch, so the result is byte-identical to an
uninterrupted build with the same config.

The folder is owned (`pipelines.outdir`): a build holds its lock from start to end, so a second build into
it fails at once, and only files the builder itself names are ever deleted. Every input ends up as samples
or as rows of rejected.parquet; when more than `max_reject_fraction` of a source's inputs is rejected the
build fails with one line per source (`RejectionRateError`) and writes no manifest, so nothing downstream
trains on a mostly empty set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from pipelines.manifest import MANIFEST_FILE, REJECTED_FILE, input_counts, inputs_hash, make_manifest, write_manifest
from pipelines.mix import MixConfig, load_mix
from pipelines.outdir import BuildLock, is_own_temporary, owned_pattern
from pipelines.plan import Plan, ShardSpec, make_plan
from pipelines.runner import run_tasks
from pipelines.shard import PARTS_DIR, ShardFiles, ShardResult, build_shard, read_done
from pipelines.tables import read_table, rejection_row, write_table
from r3fa.config import write_resolved
from r3fa.errors import UserError

RESOLVED_CONFIG_FILE = "config.resolved.yaml"


class RejectionRateError(UserError):
    """More than `max_reject_fraction` of a source's inputs were rejected; the message has one line per source."""

Progress = Callable[[int, int], None]  # (samples finished, samples planned)


@dataclass(frozen=True)
class BuildSummary:
    """The outcome of a build.

    Attributes:
        out_dir: the shard-set folder.
        shards: shards in the set.
        built: shards built by this run (the others were complete already).
        samples: samples in the set.
        planned: samples planned + inputs set aside while discovering the sources.
        rejected: rows of rejected.parquet (planned samples set aside + those inputs); planned = samples + rejected.
        counts: the manifest's counts (by split, source, yaw bin).
        inputs: per source, inputs discovered, accepted and rejected (the manifest's `inputs.by_source`).
        seconds: wall time of this run.
    """

    out_dir: Path
    shards: int
    built: int
    samples: int
    planned: int
    rejected: int
    counts: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready fields (what `r3fa shards build --format json` prints)."""
        return {**asdict(self), "out_dir": str(self.out_dir)}

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

    Removed, and nothing else: this builder's temporaries (`pipelines.outdir.is_own_temporary`), the manifest
    (rewritten at the end), every file of a planned shard without a matching `.done`, and the shard files of
    this name that the plan no longer has (e.g. a split that shrank).
    """
    owned = owned_pattern(name, (MANIFEST_FILE, REJECTED_FILE, RESOLVED_CONFIG_FILE))
    found = [*out_dir.glob("*"), *(out_dir / PARTS_DIR).glob("*")]
    for path in found:
        if is_own_temporary(path, owned):
            path.unlink()
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    planned = {shard.name for shard in plan.shards}
    for path in found:
        if owned.fullmatch(path.name) and path.name.split(".", 1)[0] not in planned and path.name.startswith(f"{name}-"):
            path.unlink(missing_ok=True)
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
    """Write rejected.parquet: the inputs set aside while discovering the sources, then the shards' rejection
    parts in plan order."""
    parts = [ShardFiles.of(out_dir, shard.name).rejected for shard in plan.shards]
    rows = [rejection_row(rejection) for rejection in plan.rejected] + read_table(parts, "rejected").to_pylist()
    write_table(out_dir / REJECTED_FILE, rows, "rejected")


def check_reject_rate(counts: dict[str, dict[str, int]], max_fraction: float) -> None:
    """Raise `RejectionRateError` when a source's rejected share of inputs exceeds `max_fraction`.

    Args:
        counts: per source, `inputs` and `rejected` (`pipelines.manifest.input_counts`).
        max_fraction: the mix config's `max_reject_fraction`.
    """
    over = [source for source, c in counts.items() if c["rejected"] > max_fraction * c["inputs"]]
    if not over:
        return
    lines = [
        f"  {source}: {c['rejected']} of {c['inputs']} inputs rejected ({c['rejected'] / max(c['inputs'], 1):.0%})"
        + (" > max_reject_fraction" if source in over else "")
        for source, c in counts.items()
    ]
    raise RejectionRateError(
        f"too many inputs rejected (max_reject_fraction {max_fraction}); no manifest written, reasons in "
        f"{REJECTED_FILE}:\n" + "\n".join(lines)
    )


def _own_folder(out: Path) -> None:
    """Create the output folder, or raise `UserError` when it cannot be one."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} exists and is not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output folder {out}: {err.strerror}") from None


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

    Raises:
        UserError: a source root that is missing or holds no pair, an output folder that is a file or is
            held by another build.
        RejectionRateError: too many inputs of a source rejected (checked after discovery, and after the build).
    """
    start = time.perf_counter()
    config = config if isinstance(config, MixConfig) else load_mix(config)
    plan = make_plan(config)
    out = Path(out_dir)
    _own_folder(out)
    with BuildLock(out):
        return _build(config, plan, out, workers, scheduler, progress, start)


def _build(
    config: MixConfig,
    plan: Plan,
    out: Path,
    workers: int,
    scheduler: str | None,
    progress: Progress | None,
    start: float,
) -> BuildSummary:
    """`build_shards` once the folder is held."""
    write_resolved(config, out, RESOLVED_CONFIG_FILE)
    inputs = inputs_hash(plan.items)
    stamp = build_stamp(config, inputs[0])
    todo = remove_stale(out, plan, stamp, config.name)
    try:
        check_reject_rate(input_counts(plan, {item.key for item in plan.items}), config.max_reject_fraction)
    except RejectionRateError:
        write_table(out / REJECTED_FILE, [rejection_row(rejection) for rejection in plan.rejected], "rejected")
        raise
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
    check_reject_rate(manifest["inputs"]["by_source"], config.max_reject_fraction)
    write_manifest(manifest, out)
    counts = manifest["counts"]
    return BuildSummary(
        out_dir=out,
        shards=len(plan.shards),
        built=len(todo),
        samples=counts["samples"],
        planned=counts["planned"],
        rejected=counts["rejected"],
        counts=counts,
        inputs=manifest["inputs"]["by_source"],
        seconds=time.perf_counter() - start,
    )
