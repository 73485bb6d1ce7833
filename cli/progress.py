"""Progress of a long command: a live bar on a terminal, plain lines where nobody watches a terminal.

Rich draws nothing live when stderr is a file, a pipe, CI or cron: it prints the finished bar once at the end, so
a two-hour build log says nothing until it is over. `progress_callback` gives the engines' `(done, total)`
callback either way: on a terminal a rich bar (transient: the summary that follows replaces it); elsewhere one
line on stderr at start, every `every_percent` percent or `every_s` seconds (whichever comes first), and at the
end, as `key=value` like training's epoch lines, e.g. `build done=1200/6990 percent=17 samples_per_s=450.3 eta_s=13`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

ProgressCallback = Callable[[int, int], None]


@contextlib.contextmanager
def progress_callback(
    label: str, unit: str = "items", every_percent: float = 10.0, every_s: float = 60.0
) -> Iterator[ProgressCallback]:
    """A `(done, total)` callback that shows progress on stderr (see the module docstring).

    Args:
        label: what is being done ("build", "audit").
        unit: what `done` counts, for the rate ("samples", "images").
        every_percent: percent points between two plain lines.
        every_s: seconds between two plain lines, however little moved.
    """
    console = Console(stderr=True)
    if console.is_terminal:
        columns = (TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    lines = _ProgressLines(label, unit, every_percent, every_s)
    yield lines
    lines.finish()


class _ProgressLines:
    """The callback of a non-terminal: a line when enough has moved or enough time has passed."""

    def __init__(self, label: str, unit: str, every_percent: float, every_s: float) -> None:
        self.label, self.unit = label, unit
        self.every_percent, self.every_s = every_percent, every_s
        self.start = time.monotonic()
        self.last: tuple[int, int] | None = None
        self.shown_percent, self.shown_at = -1.0, -float("inf")

    def __call__(self, done: int, total: int) -> None:
        self.last = (done, total)
        percent = 100.0 * done / total if total else 100.0
        now = time.monotonic()
        moved = percent - self.shown_percent >= self.every_percent or percent < self.shown_percent
        if moved or now - self.shown_at >= self.every_s:
            self._show(done, total, percent, now)

    def finish(self) -> None:
        """The last state, if the last line did not show it."""
        if self.last is not None:
            done, total = self.last
            percent = 100.0 * done / total if total else 100.0
            if percent != self.shown_percent:
                self._show(done, total, percent, time.monotonic())

    def _show(self, done: int, total: int, percent: float, now: float) -> None:
        self.shown_percent, self.shown_at = percent, now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f" eta_s={round((total - done) / rate)}" if rate > 0 and total > done else ""
        line = f"{self.label} done={done}/{total} percent={percent:.0f} {self.unit}_per_s={rate:.1f}{eta}"
        print(line, file=sys.stderr, flush=True)
