"""`r3fa train`: the training engine from the terminal, with the options of `python -m r3fa.training`.

Both run `r3fa.training.train_from_files`, so `r3fa train --config C --shards S --out O` and
`torchrun --nproc-per-node N -m r3fa.training --config C --shards S --out O` do the same thing (torchrun can
also start the `r3fa` script itself). Rank 0 prints the run's summary as one JSON line on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def train_command(
    config: Path = typer.Option(..., "--config", help="training config (configs/train/*.yaml)"),
    shards: Path = typer.Option(..., "--shards", help="shard set (with manifest.json)"),
    out: Path = typer.Option(..., "--out", help="run directory (created)"),
    fresh: bool = typer.Option(False, "--fresh", help="move an earlier run in --out aside and start over"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar"),
) -> None:
    """Train a model on a shard set; a killed run started again resumes from its last checkpoint."""
    from r3fa.distributed import DistContext
    from r3fa.training import fit_summary, train_from_files

    result = train_from_files(config, shards, out, fresh=fresh, progress=not no_progress)
    if DistContext.from_env().is_main:
        typer.echo(json.dumps(fit_summary(result)))


def register(app: typer.Typer) -> None:
    """Add the top-level `train` command."""
    app.command(
        "train",
        epilog="Examples:\n\n"
        "r3fa shards build configs/mix/demo.yaml --out runs/shards/demo && "
        "r3fa train --config configs/train/demo.yaml --shards runs/shards/demo --out runs/train/demo\n\n"
        "torchrun --nproc-per-node 2 -m r3fa.training --config configs/train/demo.yaml --shards runs/shards/demo "
        "--out runs/train/demo-ddp",
    )(train_command)
