"""`r3fa shards`: build a shard set from a mix config, verify one on disk, inspect its contents.

Thin wrappers: the work lives in `pipelines.build`, `pipelines.verify` and `pipelines.inspect`; this module
only parses options, shows progress and prints tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.formats import OutputFormat
from cli.progress import progress_callback

app = typer.Typer(
    help="Build, verify and inspect WebDataset shard sets.",
    epilog="Example:\n\nr3fa shards build configs/mix/test.yaml --out /tmp/shards/test --workers 0 "
    "&& r3fa shards verify /tmp/shards/test",
    no_args_is_help=True,
)
console = Console()


def _counts_table(title: str, counts: dict[tuple, int], columns: list[str]) -> Table:
    table = Table(title=title)
    for column in [*columns, "samples"]:
        table.add_column(column, justify="right" if column == "samples" else "left")
    for row, n in sorted(counts.items()):
        table.add_row(*map(str, row), str(n))
    return table


@app.command(
    epilog="Examples:\n\n"
    "r3fa shards build configs/mix/demo.yaml --out runs/shards/demo --workers 2\n\n"
    "r3fa shards build configs/mix/test.yaml --out /tmp/shards/test --workers 0 --format json\n\n"
    "r3fa shards build configs/mix/paper-680k.yaml --out /data/shards/paper --scheduler tcp://SCHEDULER_HOST:8786\n\n"
    "Killed or failed? Run the same command again: finished shards are kept, the rest is rebuilt, and the result "
    "is byte-identical to an uninterrupted build."
)
def build(
    config: Path = typer.Argument(..., help="mix config YAML (configs/mix/*.yaml)"),
    out: Path = typer.Option(..., "--out", help="shard-set folder (created; an existing build is resumed)"),
    workers: int = typer.Option(1, "--workers", min=0, help="Dask worker processes (0: no Dask, in-process)"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="address of an existing Dask scheduler"),
    keep_parts: bool = typer.Option(False, "--keep-parts", help="keep the phase-1 record files (parts/*.bin)"),
    format: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="summary on stdout as a table, or as JSON (no progress bar)"
    ),
) -> None:
    """Build (or resume) a shard set; writes config.resolved.yaml, shards, rejections/rejected.parquet, manifest.json.

    A config or folder mistake (missing or invalid config, a source root without pairs, --out a file or held
    by another build, too many inputs rejected) is a `UserError`: one line (one per source for the rejection
    rate), exit code 2.
    """
    from pipelines.build import build_shards
    from pipelines.mix import load_mix

    mix = load_mix(config)
    if format is OutputFormat.json:
        summary = build_shards(mix, out, workers=workers, scheduler=scheduler, keep_parts=keep_parts)
        typer.echo(json.dumps(summary.to_dict(), indent=1, sort_keys=True))
        return
    with progress_callback("build", unit="samples") as progress:
        summary = build_shards(mix, out, workers=workers, scheduler=scheduler, keep_parts=keep_parts, progress=progress)
    counts = summary.counts
    console.print(f"{out}: {summary.shards} shards, {summary.built} built in {summary.seconds:.1f} s", markup=False)
    table = Table(title="samples by split and |yaw| bin")
    for column in ("", *counts["by_yaw_bin"], "total"):
        table.add_column(column, justify="right")
    for split in ("train", "val"):
        bins = [counts["by_split_yaw_bin"][f"{split}/{b}"] for b in counts["by_yaw_bin"]]
        table.add_row(split, *map(str, bins), str(counts["by_split"][split]))
    table.add_row("all", *map(str, counts["by_yaw_bin"].values()), str(counts["samples"]))
    console.print(table)
    inputs = ", ".join(f"{k} {v['accepted']}/{v['inputs']}" for k, v in summary.inputs.items())
    console.print(f"inputs accepted: {inputs}; synthetic {counts['synthetic']}; planned {summary.planned}; "
                  f"rejected {summary.rejected} (rejections/rejected.parquet); surplus {summary.surplus}")  # fmt: skip


@app.command(
    epilog="Example: r3fa shards verify runs/shards/demo --format json  (exit 1 and the findings if anything differs)"
)
def verify(
    out: Path = typer.Argument(..., help="shard-set folder"),
    format: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help='findings as a list, or as JSON {"out", "ok", "problems"}'
    ),
) -> None:
    """Re-hash every file and check everything the manifest claims (counts, whitening, Parquet vs tar); exit 1 on
    any finding."""
    from pipelines.verify import verify_shard_set

    problems = verify_shard_set(out)
    if format is OutputFormat.json:
        typer.echo(json.dumps({"out": str(out), "ok": not problems, "problems": problems}, indent=1))
    elif problems:
        console.print(f"[red]{len(problems)} mismatch(es) in {out}:")
        for problem in problems:
            console.print(f"  - {problem}", markup=False)
    else:
        console.print(f"[green]{out}: OK")
    if problems:
        raise typer.Exit(1)


@app.command(epilog="Example: r3fa shards inspect runs/shards/demo --sheet sheet.png --n 24")
def inspect(
    out: Path = typer.Argument(..., help="shard-set folder"),
    sheet: Path | None = typer.Option(None, "--sheet", help="write a contact sheet of random samples (PNG)"),
    n: int = typer.Option(48, "--n", min=1, help="samples on the contact sheet"),
    seed: int = typer.Option(0, "--seed", help="which samples"),
) -> None:
    """Counts per split, source and |yaw| bin; optionally a contact sheet with the stored landmarks drawn."""
    from pipelines.inspect import count_samples, read_samples

    counts = count_samples(out)
    console.print(_counts_table(f"{out}: samples", dict(counts), ["split", "source", "|yaw|", "synthetic"]))
    if sheet is None:
        return
    import cv2

    from r3fa.draw import contact_sheet, draw_landmarks

    samples = read_samples(out, n, seed)
    images = [draw_landmarks(image, landmarks, radius=2, scale=3.0) for _, image, landmarks in samples]
    captions = [key.removeprefix("aflw2000_3d_")[-24:] for key, _, _ in samples]
    sheet.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(sheet), contact_sheet(images, ncols=8, captions=captions)):
        raise typer.BadParameter(f"cannot write {sheet}")
    console.print(f"contact sheet of {len(samples)} samples (stored lms.f32 drawn): {sheet}")
