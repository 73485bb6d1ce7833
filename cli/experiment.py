"""`r3fa experiment CONFIG`: run an experiment grid (variants x seeds) and print its comparison report.

The work is `flows.experiment.experiment_flow` (build or reuse shards, train on the same step budget, choose
each checkpoint on the validation split, evaluate on the held-out fold, compare with intervals); this command
prepares Prefect's environment like `r3fa demo` and prints the report as a table or as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.demo import prefect_environment
from cli.formats import OutputFormat



def report_table(report: dict) -> Table:
    """Mean NME over seeds with its interval, and the paired difference to the reference, per variant."""
    from r3fa.experiments.comparison import COLUMNS  # scipy and torch: imported when the command runs, not by `r3fa`

    pct = f"{report['confidence']:.0%}"
    table = Table(title=f"experiment {report['experiment']}: NME (%) [{pct} interval over seeds]; "
                        f"vs {report['reference']}: difference [{pct} paired bootstrap]")  # fmt: skip
    table.add_column("variant")
    for column in COLUMNS:
        table.add_column(column)
    for variant, entry in report["variants"].items():
        cells = []
        for column in COLUMNS:
            i = entry["nme"][column]
            cell = f"{i['mean']:.3f}" + ("" if i["low"] is None else f" [{i['low']:.3f}, {i['high']:.3f}]")
            diff = entry.get("vs_reference", {}).get(column)
            if diff is not None:
                cell += f"\n{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] {diff['verdict']}"
            cells.append(cell)
        table.add_row(variant, *cells)
    return table


def register(app: typer.Typer) -> None:
    """Add the top-level `experiment` command."""

    @app.command()
    def experiment(
        config: Path = typer.Argument(..., help="experiment grid (configs/experiments/*.yaml)"),
        out: Path | None = typer.Option(None, "--out", help="experiment folder (default: the config's out_dir)"),
        output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json"),
    ) -> None:
        """Train every variant x seed of a grid on the same step budget, choose each checkpoint on the
        validation split, evaluate on the held-out fold and compare with 95 % intervals.

        Finished runs are not redone and shard sets are reused, so after a kill the same command continues.
        Writes report.json, report.md and ced.png in the experiment folder.

        Example:

            r3fa experiment configs/experiments/ablation.yaml --out runs/experiments/ablation
        """
        from r3fa.experiments.config import load_experiment  # torch: only when this command runs

        load_experiment(config, out)  # a grid that cannot run is one line here, before Prefect starts
        prefect_environment()
        from flows.experiment import experiment_flow

        result = experiment_flow(str(config), None if out is None else str(out))
        if output_format is OutputFormat.json:
            typer.echo(json.dumps({"report": result["report"], "paths": result["paths"]}, indent=2))
            return
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        console.print(report_table(result["report"]))
        for kind, path in result["paths"].items():
            console.print(f"  {kind}: {path}")
