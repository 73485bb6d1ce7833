"""Build a shard set from a mix config in two phases: make each source's records once, then write the shards.

1. Plan (`pipelines.plan`): every candidate sample, grouped by source item, in parts of `sources_per_part` items.
2. Phase 1 (`pipelines.parts`, Dask tasks): per item, one decode and one label, then all its candidates
   (augmentation copies and face-profiling views), encoded (JPEG, labels, JSON, Parquet row) into the part's
   record file, or rejected.
3. The cut (`pipelines.cut`): per stage the first `target` accepted candidates in the plan's fixed order;
   a shortfall beyond `target_tolerance` fails the build with the rejection reasons.
4. Phase 2 (`pipelines.shard`, Dask tasks): the delivered samples shuffled with the seed (`assign_shards`),
   each shard written from encoded records read by offset (tar, .idx, Parquet, .done).
5. rejections/rejected.parquet, manifest.json; the parts' record files are deleted (`keep_parts` keeps them).

Re-running `build_shards` on the same folder resumes: complete parts and shards (their markers match the plan)
are skipped, this builder's temporaries of a killed run are removed and unfinished files rebuilt, so the result
is byte-identical to an uninterrupted build with the same config, whatever the number of workers.

The folder is owned (`pipelines.outdir`): a build holds its lock from start to end, so a second build into
it fails at once, and only files the builder itself names are ever deleted. Every input ends up as samples,
as rows of rejected.parquet or as surplus; when more than `max_reject_fraction` of a source's inputs is
rejected the build fails with one line per source (`RejectionRateError`) and writes no manifest, so nothing
downstream trains on a mostly empty set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from pipelines.cut import Cut, check_shortfall, cut_candidates
from pipelines.manifest import input_counts, inputs_hash, make_manifest, write_manifest
from pipelines.mix import MixConfig, load_mix
from pipelines.outdir import BuildLock, is_own_temporary, owned_pattern
from pipelines.parts import PARTS_DIR, PartFiles, PartResult, make_part, part_is_complete
from pipelines.plan import PartSpec, Plan, ShardSpec, assign_shards, make_plan
from pipelines.runner import run_tasks
from pipelines.shard import ShardFiles, ShardResult, ShardTask, build_shard
from pipelines.tables import rejection_row, write_table
from r3fa.atomic import read_marker
from r3fa.config import write_resolved
from r3fa.errors import UserError
from r3fa.shard_contract import MANIFEST_FILE, REJECTED_FILE

RESOLVED_CONFIG_FILE = "config.resolved.yaml"


class RejectionRateError(UserError):
    """More than `max_reject_fraction` of a source's inputs were rejected; the message has one line per source."""

Progress = Callable[[int, int], None]  # (candidates made + samples written, candidates + samples planned)
SOURCES_PER_PART = 64  # source items per phase-1 task


@dataclass(frozen=True)
class BuildSummary:
    """The outcome of a build.

    Attributes:
        out_dir: the shard-set folder.
        shards: shards in the set.
        built: shards built by this run (the others were complete already).
        samples: samples in the set.
        planned: candidates planned + inputs set aside while discovering the sources.
        rejected: rows of rejected.parquet (candidates set aside + those inputs).
        surplus: candidates made but cut by the exact counts; planned = samples + rejected + surplus.
        counts: the manifest's counts (by split, source, yaw bin, stage).
        inputs: per source, inputs discovered, accepted, rejected and surplus (the manifest's `inputs.by_source`).
        seconds: wall time of this run.
    """

    out_dir: Path
    shards: int
    built: int
    samples: int
    planned: int
    rejected: int
    surplus: int = 0
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


def _owned(name: str):
    return owned_pattern(name, (MANIFEST_FILE, Path(REJECTED_FILE).name, RESOLVED_CONFIG_FILE))


def _folder_files(out_dir: Path) -> list[Path]:
    return [*out_dir.glob("*"), *(out_dir / PARTS_DIR).glob("*"), *(out_dir / REJECTED_FILE).parent.glob("*")]


def remove_temporaries(out_dir: Path, name: str) -> None:
    """Delete this builder's temporaries (`pipelines.outdir.is_own_temporary`), the manifest (rewritten at the
    end) and a rejected.parquet at the top of the folder (where builds before manifest version 2 wrote it)."""
    owned = _owned(name)
    for path in _folder_files(out_dir):
        if is_own_temporary(path, owned):
            path.unlink()
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    (out_dir / Path(REJECTED_FILE).name).unlink(missing_ok=True)


def _remove_unplanned(out_dir: Path, name: str, kind: str, planned: set[str]) -> None:
    """Delete the files of this set's shards (kind "shard") or parts (kind "part") the plan no longer has."""
    owned = _owned(name)
    for path in _folder_files(out_dir):
        stem = path.name.split(".", 1)[0]
        if owned.fullmatch(path.name) and stem.startswith(f"{name}-") and (kind == "part") == ("-part-" in stem):
            if stem not in planned:
                path.unlink(missing_ok=True)


def parts_to_make(out_dir: Path, parts: list[PartSpec], stamp: str, name: str) -> list[PartSpec]:
    """The parts without a matching index; their files, and those of parts no longer planned, are deleted."""
    _remove_unplanned(out_dir, name, "part", {part.name for part in parts})
    todo = []
    for part in parts:
        if part_is_complete(out_dir, part, stamp):
            continue
        files = PartFiles.of(out_dir, part.name)
        files.index.unlink(missing_ok=True)
        files.data.unlink(missing_ok=True)
        todo.append(part)
    return todo


def shards_to_write(out_dir: Path, shards: tuple[ShardSpec, ...], stamp: str, name: str) -> list[ShardSpec]:
    """The shards without a matching `.done` or with a file missing; their files, and those of shards no longer
    planned, are deleted."""
    _remove_unplanned(out_dir, name, "shard", {shard.name for shard in shards})
    todo = []
    for shard in shards:
        files = ShardFiles.of(out_dir, shard.name)
        done = read_marker(files.done)
        complete = all(path.is_file() for path in files.outputs())
        if complete and done is not None and done.get("fingerprint") == shard.fingerprint(stamp):
            continue
        for path in files.outputs():
            path.unlink(missing_ok=True)
        todo.append(shard)
    return todo


def write_rejections(out_dir: Path, plan: Plan, cut: Cut | None) -> None:
    """Write rejections/rejected.parquet: the inputs set aside while discovering the sources, then the
    candidates' rejections in plan order."""
    rejections = [*plan.rejected, *(cut.rejections if cut else [])]
    write_table(out_dir / REJECTED_FILE, [rejection_row(rejection) for rejection in rejections], "rejected")


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
    keep_parts: bool = False,
    sources_per_part: int = SOURCES_PER_PART,
) -> BuildSummary:
    """Build (or finish building) the shard set of a mix config.

    Args:
        config: a `MixConfig` or the path of its YAML.
        out_dir: the shard-set folder (created).
        workers: Dask worker processes of a local cluster (one thread each); 0 builds in this process.
        scheduler: address of an existing Dask scheduler instead of a local cluster.
        progress: called with (work finished, work planned): candidates made, then samples written.
        keep_parts: keep the phase-1 record files (`DIR/parts/*.bin`) after the build.
        sources_per_part: source items per phase-1 task (changes the tasks, never the shards' bytes).

    Returns:
        The summary; the folder holds the shards, rejections/rejected.parquet, manifest.json,
        config.resolved.yaml and parts/ (the phase-1 indexes).

    Raises:
        UserError: a source root that is missing or holds no pair, an output folder that is a file or is
            held by another build.
        RejectionRateError: too many inputs of a source rejected (checked after discovery, and after the build).
        ShortfallError: a stage delivered fewer samples than its target allows.
    """
    start = time.perf_counter()
    config = config if isinstance(config, MixConfig) else load_mix(config)
    if sources_per_part < 1:
        raise UserError("sources_per_part must be at least 1")
    plan = make_plan(config)
    out = Path(out_dir)
    _own_folder(out)
    with BuildLock(out):
        return _build(config, plan, out, workers, scheduler, progress, keep_parts, sources_per_part, start)


def _build(
    config: MixConfig,
    plan: Plan,
    out: Path,
    workers: int,
    scheduler: str | None,
    progress: Progress | None,
    keep_parts: bool,
    sources_per_part: int,
    start: float,
) -> BuildSummary:
    """`build_shards` once the folder is held."""
    write_resolved(config, out, RESOLVED_CONFIG_FILE)
    inputs = inputs_hash(plan.items)
    stamp = build_stamp(config, inputs[0])
    remove_temporaries(out, config.name)
    try:
        check_reject_rate(input_counts(plan, {item.key for item in plan.items}), config.max_reject_fraction)
    except RejectionRateError:
        write_rejections(out, plan, None)
        raise
    parts = plan.parts(config.name, sources_per_part)
    todo_parts = parts_to_make(out, parts, stamp, config.name)
    report = progress or (lambda done, total: None)
    total = plan.n_samples * 2  # candidates made, then (at most) as many samples written
    finished = plan.n_samples - sum(len(p.samples) for p in todo_parts)
    report(finished, total)

    def part_done(result: PartResult) -> None:
        nonlocal finished
        finished += result.candidates
        report(finished, total)

    run = partial(run_tasks, workers=workers, scheduler=scheduler)
    run(partial(make_part, config=config, out_dir=out, stamp=stamp), todo_parts, on_result=part_done,
        names=[f"part-{p.name}" for p in todo_parts])  # fmt: skip
    cut = cut_candidates(plan, parts, out)
    write_rejections(out, plan, cut)
    check_shortfall(config, cut)
    shards = assign_shards(config, cut.delivered)
    todo = shards_to_write(out, shards, stamp, config.name)
    needed = {cut.locations[spec.key][0] for shard in todo for spec in shard.samples}
    missing = [p for p in parts if p.name in needed and not PartFiles.of(out, p.name).data.is_file()]
    if missing:  # a finished build whose record files were deleted, then a shard lost: make them again
        run(partial(make_part, config=config, out_dir=out, stamp=stamp), missing,
            names=[f"part-{p.name}" for p in missing])  # fmt: skip
    total = plan.n_samples + len(cut.delivered)
    finished = plan.n_samples + len(cut.delivered) - sum(len(s.samples) for s in todo)
    report(finished, total)

    def shard_done(result: ShardResult) -> None:
        nonlocal finished
        finished += result.count
        report(finished, total)

    tasks = [ShardTask.of(s, cut.locations, stamp) for s in todo]
    run(partial(build_shard, out_dir=out, stamp=stamp), tasks, on_result=shard_done,
        names=[f"shard-{s.name}" for s in todo])  # fmt: skip
    manifest = make_manifest(config, plan, shards, cut, out, inputs)
    written = manifest.model_dump(mode="json")
    check_reject_rate(written["inputs"]["by_source"], config.max_reject_fraction)
    write_manifest(manifest, out)
    if not keep_parts:
        for part in parts:
            PartFiles.of(out, part.name).data.unlink(missing_ok=True)
    counts = manifest.counts
    return BuildSummary(
        out_dir=out,
        shards=len(shards),
        built=len(todo),
        samples=counts.samples,
        planned=counts.planned,
        rejected=counts.rejected,
        surplus=counts.surplus,
        counts=written["counts"],
        inputs=written["inputs"]["by_source"],
        seconds=time.perf_counter() - start,
    )
