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

from flows.settings import DEFAULT_HOME, prefect_settings
from r3fa.report import COLUMNS, table_rows


def prefect_environment() -> None:
    """Project-local Prefect home, no telemetry, and the embedded backend unless a server is configured."""
    home = Path(os.environ.get("PREFECT_HOME", DEFAULT_HOME))
    home.mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level (its SQLite file lives here)
    for name, value in prefect_settings(home).items():
        os.environ.setdefault(name, value)


def nme_table(reports: list[dict]) -> Table:
    """The pipeline's `nme.json` reports and the published rows, laid out like the paper's Table 1."""
    table = Table(title="NME (%), 68 points, 3DDFA protocol ('evaluated on' says which images)")
    for column in COLUMNS:
        table.add_column(column)
    for row in table_rows(reports):
        table.add_row(*(row[c] for c in COLUMNS))
    return table


def register(app: typer.Typer) -> None:
    """Add the top-level `demo` command."""

    @app.command(epilog="Example:\n\nr3fa demo --config configs/demo.yaml")
    def demo(
        config: Path = typer.Option(Path("configs/demo.yaml"), "--config", help="pipeline config (configs/demo.yaml)"),
    ) -> None:
        """Build the demo shard set, train on it, evaluate on the held-out fold; print the NME table."""
        prefect_environment()
        from flows.pipeline import PipelineConfig, pipeline_flow
        from r3fa.config import load_config

        load_config(config, PipelineConfig)  # a bad config is one line here, not a failed flow run's traceback
        result = pipeline_flow(str(config))
        console = Console()
        if not console.is_terminal:  # a log file: do not fold the table to 80 columns
            console = Console(width=160)
        console.print(nme_table(result["reports"]))
        for note in result["notes"]:
            console.print(f"  {note}")
        console.print("[bold]artifacts[/]")
        for name, path in result["artifacts"].items():
            console.print(f"  {name}: {path}")
