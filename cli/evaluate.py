"""`r3fa eval`: evaluate a checkpoint on a benchmark by the 3DDFA protocol, from the terminal.

It calls the engine (`r3fa.evaluation.evaluate`) directly, without Prefect, so a quick check needs no
server; the Prefect flow (`flows/evaluate.py`) is the same engine plus artifacts. The run's files go to
`--out` (default `runs/eval/<model>-<benchmark>[-fold<K>]`); stdout gets `nme.json` (`--format json`)
or the Table-1-style table (`--format table`).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cli.formats import OutputFormat
from r3fa.paths import PROJECT_ROOT



class BenchmarkName(str, Enum):
    """The names of `r3fa.benchmarks.BENCHMARKS`, as a choice for the command line."""

    aflw2000_3d = "aflw2000-3d"
    aflw2000_3d_reannotated = "aflw2000-3d-reannotated"
    aflw = "aflw"


def eval_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", exists=True, dir_okay=False, help="r3fa checkpoint or 3DDFA-V2 .pth"),
    benchmark: BenchmarkName = typer.Option(..., "--benchmark", help="which benchmark"),
    model: str | None = typer.Option(None, "--model", help="registry name of the architecture (default: from the checkpoint)"),
    fold: int | None = typer.Option(None, "--fold", min=0, help="evaluate only this fold (r3fa.folds)"),
    n_folds: int = typer.Option(2, "--n-folds", min=2, help="number of folds"),
    out: Path | None = typer.Option(None, "--out", file_okay=False, help="folder for the run's files"),
    label: str | None = typer.Option(None, "--label", help="row name in the table (default: --model or the file name)"),
    batch_size: int = typer.Option(128, "--batch-size", min=1),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="what to print"),
) -> None:
    """Evaluate a checkpoint: NME per yaw bin, CED, overlays; prints nme.json or the table."""
    from r3fa.benchmarks import load_benchmark
    from r3fa.evaluation import evaluate
    from r3fa.predictor import load_predictor
    from r3fa.report import COLUMNS, table_rows
    from r3fa.stderr_log import log_to_stderr

    name = benchmark.value
    label = label or model or checkpoint.stem
    suffix = "" if fold is None else f"-fold{fold}"
    out_dir = out or PROJECT_ROOT / "runs" / "eval" / f"{label}-{name}{suffix}"
    bench = load_benchmark(name, fold=fold, n_folds=n_folds)
    predictor = load_predictor(checkpoint, model_name=model)
    err = Console(stderr=True)
    if not err.is_terminal:  # no live bar there: the engine's line per 10 % of the images instead
        log_to_stderr("r3fa.evaluation")
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"{label} on {name}", total=len(bench))
        result = evaluate(
            predictor,
            bench,
            out_dir,
            batch_size,
            progress=lambda done, total: bar.update(task, completed=done),
            model_name=label,
            checkpoint=checkpoint,
        )
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(result.report, indent=2))
        return
    table = Table(title=f"NME (%) on {name}, {bench.selection}")
    for column in COLUMNS:
        table.add_column(column)
    for row in table_rows([result.report]):
        table.add_row(*(row[c] for c in COLUMNS))
    Console().print(table)
    err.print(f"files in {out_dir}")


def register(app: typer.Typer) -> None:
    """Adds the top-level `eval` command."""
    app.command(
        "eval",
        epilog="Examples:\n\n"
        "r3fa eval --checkpoint ../shared/data/3ddfa_v2/weights/mb05_120x120.pth --model mobilenet_v1 "
        "--benchmark aflw2000-3d --out runs/eval/3ddfa-v2\n\n"
        "r3fa eval --checkpoint runs/demo/train/model.pth --benchmark aflw2000-3d --fold 1 --format json",
    )(eval_command)
