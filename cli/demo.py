"""`r3fa demo`: the whole job on a small config (build shards -> train -> evaluate), ending with the NME table.

The command only prepares Prefect's environment and prints; the work is `flows.pipeline.pipeline_flow`.
Prefect runs on its embedded local backend (a temporary server that the flow call starts and stops), with
its home under the project's `runs/` folder and telemetry off; Prefect is imported only after that, inside
the command, so that the settings apply.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from r3fa.paths import PROJECT_ROOT

NME_COLUMNS = ("0-30", "30-60", "60-90", "mean", "std")


def _prefect_environment() -> None:
    """Project-local Prefect home, no telemetry, and the embedded backend unless a server is configured."""
    os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / "runs" / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")


def nme_table(rows: list[dict]) -> Table:
    """The pipeline's NME rows (percent) as a rich table, with the data each row was measured on."""
    table = Table(title="NME (%) on AFLW2000-3D, 68 points, 3DDFA protocol")
    table.add_column("model")
    table.add_column("evaluated on")
    for name in NME_COLUMNS:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(row["model"], row["data"], *(f"{row['bins'][name]:.3f}" for name in NME_COLUMNS))
    return table


def register(app: typer.Typer) -> None:
    """Add the top-level `demo` command."""

    @app.command()
    def demo(
        config: Path = typer.Option(Path("configs/demo.yaml"), "--config", help="pipeline config (configs/demo.yaml)"),
    ) -> None:
        """Build the demo shard set, train on it, evaluate on the held-out fold; print the NME table."""
        _prefect_environment()
        from flows.pipeline import pipeline_flow

        result = pipeline_flow(str(config))
        console = Console()
        console.print(nme_table(result["rows"]))
        for note in result["notes"]:
            console.print(f"  {note}")
        console.print("[bold]artifacts[/]")
        for name, path in result["artifacts"].items():
            console.print(f"  {name}: {path}")
