"""Progress of the engines inside Prefect tasks: a progress artifact in the UI and lines in the run's log.

The engines report in two plain ways that know nothing of Prefect: a `(done, total)` callback
(`pipelines.build.build_shards`, `r3fa.evaluation.evaluate`) and the `logging` module (`r3fa.training` logs
one line per epoch, `r3fa.evaluation` one per 10 %). `RunProgress` turns the callback into a Prefect progress
artifact plus a log line; `engine_logs` hands the engines' log records to the task run's logger, so they are
in the flow run's log in the UI and on the worker's console (once: they do not also propagate to the root
logger meanwhile).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact


class RunProgress:
    """A `(done, total)` callback that updates a progress artifact and logs `<what>: done/total (p %)`.

    Args:
        key: the artifact key (lowercase letters, digits, dashes).
        description: the artifact's description in the UI.
        what: the log lines' first word(s), e.g. "build runs/shards/demo".
        min_step: percent points between two log lines (0: a line at every call that moved; None: no lines,
            when the engine logs its own); the artifact follows every call.
    """

    def __init__(self, key: str, description: str, what: str, min_step: float | None = 0.0) -> None:
        self._id = create_progress_artifact(progress=0.0, key=key, description=description)
        self._log = get_run_logger()
        self._what, self._min_step = what, min_step
        self._last: tuple[int, int] | None = None
        self._logged = -1.0

    def __call__(self, done: int, total: int) -> None:
        percent = 100.0 * done / total if total else 100.0
        if (done, total) == self._last:
            return
        self._last = (done, total)
        update_progress_artifact(self._id, progress=percent)
        if self._min_step is None:
            return
        if percent >= 100.0 or self._logged < 0 or percent - self._logged >= self._min_step or percent < self._logged:
            self._logged = percent
            self._log.info("%s: %d/%d (%.0f %%)", self._what, done, total, percent)


class _ToRunLogger(logging.Handler):
    def __init__(self, target: logging.Logger | logging.LoggerAdapter) -> None:
        super().__init__()
        self._target = target

    def emit(self, record: logging.LogRecord) -> None:
        self._target.log(record.levelno, record.getMessage())


@contextlib.contextmanager
def engine_logs(name: str = "r3fa") -> Iterator[None]:
    """Forward the INFO (and higher) records of logger `name` and its children to this run's Prefect logger."""
    engine = logging.getLogger(name)
    handler = _ToRunLogger(get_run_logger())
    saved = engine.level, engine.propagate
    engine.addHandler(handler)
    engine.setLevel(logging.INFO)
    engine.propagate = False
    try:
        yield
    finally:
        engine.removeHandler(handler)
        engine.setLevel(saved[0])
        engine.propagate = saved[1]
