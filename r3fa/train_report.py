"""What a training run tells people while it runs and leaves for them afterwards: the progress bar, the log lines,
`metrics.csv`, and (for debugging and tests) the log of which keys each batch held.

Kept apart from the engine (`r3fa.training`) so that the training loop holds no formatting and no file layout of
its reports. Rank 0 logs one `key=value` line per epoch (loss, validation NME, img/s, ETA) and a summary line at
the end through the `r3fa.training` logger, terminal or not (`epoch_line`, `summary_line`); on a terminal a rich
bar shows the steps as well (`ProgressBar`). `metrics.csv` is rewritten whole after every epoch, so a resumed run
never duplicates a row.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from r3fa.atomic import write_text_atomic
from r3fa.distributed import DistContext
from r3fa.train_resume import TrainState

METRIC_COLUMNS = (
    "epoch", "global_step", "lr", "train_loss", "val_loss", "val_nme", "val_samples", "images_per_s", "epoch_seconds",
)  # fmt: skip
BATCH_LOG_ENV = "R3FA_TRAIN_BATCH_LOG"


class ProgressBar:
    """A rich progress bar over the steps of the run, with images/s (main process only)."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int) -> None:
        """A bar of `total_steps` steps, `done_steps` of them already done (a resumed run); nothing when not
        `enabled`."""
        self._progress = (
            Progress(
                TextColumn("[bold]train[/] epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[ips]:>7.1f} img/s  loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            if enabled
            else None
        )
        self._total, self._done = total_steps, done_steps

    @contextlib.contextmanager
    def running(self) -> Iterator["ProgressBar"]:
        """Show the bar while the block runs (a no-op when disabled)."""
        if self._progress is None:
            yield self
            return
        with self._progress:
            self._task = self._progress.add_task(
                "train", total=self._total, completed=self._done, epoch=0, ips=0.0, loss=math.nan
            )
            yield self

    def update(self, epoch: int, images_per_s: float, loss: float) -> None:
        """Advance one step, showing the epoch (counted from 1), the rate and the epoch's running loss."""
        if self._progress is not None:
            self._progress.update(self._task, advance=1, epoch=epoch, ips=images_per_s, loss=loss)


def epoch_line(record: dict[str, Any], epochs: int, eta_s: float) -> str:
    """The log line of a finished epoch: `key=value` fields, `epoch` counted from 1 out of `epochs`."""
    return (
        f"train epoch={record['epoch'] + 1}/{epochs} step={record['global_step']} lr={record['lr']:.3g} "
        f"train_loss={record['train_loss']:.5f} val_loss={record['val_loss']:.5f} val_nme={record['val_nme']:.3f} "
        f"img_per_s={record['images_per_s']:.1f} epoch_s={record['epoch_seconds']:.1f} eta_s={eta_s:.0f}"
    )


def summary_line(history: list[dict[str, Any]], model_path: Path, seconds: float) -> str:
    """The log line at the end of a run: epochs, last epoch's validation NME and loss, wall time, model file.

    Args:
        history: the run's per-epoch records (`metrics.csv`'s rows).
        model_path: the final model file.
        seconds: the run's wall time.
    """
    last = history[-1] if history else {}
    return (
        f"train done epochs={len(history)} val_nme={last.get('val_nme', math.nan):.3f} "
        f"train_loss={last.get('train_loss', math.nan):.5f} seconds={seconds:.1f} model={model_path}"
    )


def write_metrics(history: list[dict[str, Any]], path: Path) -> Path:
    """Write the per-epoch history as CSV (atomically; the whole file each time, so resume never duplicates)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return write_text_atomic(path, text.getvalue())


def batch_log(loader: Any, state: TrainState, ctx: DistContext) -> Any:
    """`loader`, recording each training batch's keys when `$R3FA_TRAIN_BATCH_LOG` names a folder (else as is).

    A debugging and testing aid: each process appends one JSON line per batch, before the step runs, to
    `<folder>/rank<R>.jsonl`: {"epoch", "step", "rank", "world_size", "positions", "keys"} (positions: places in
    the epoch's canonical order). A run killed after the line was written may not have taken that step; the
    checkpoint's (epoch, step) says which steps count.
    """
    folder = os.environ.get(BATCH_LOG_ENV)
    if not folder:
        return loader
    path = Path(folder) / f"rank{ctx.rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)

    def logged() -> Iterator[dict[str, Any]]:
        with path.open("a") as fh:
            for batch in loader:
                where = {"epoch": state.epoch, "step": state.step, "rank": ctx.rank, "world_size": ctx.world_size}
                fh.write(json.dumps({**where, "positions": batch["positions"], "keys": batch["keys"]}) + "\n")
                fh.flush()
                yield batch

    return logged()
