"""A Dask worker plugin that keeps two worker log records out of a build's output.

A worker whose heartbeat races its local cluster's shutdown logs "Failed to communicate with scheduler during
heartbeat" with a two-part traceback (dask/distributed#7105, open upstream). The build has finished by then, and
with a local cluster the scheduler lives in the driver's process, so a scheduler that really failed would fail
the build itself: the record says nothing a user can act on. And a task that raises a `UserError` (a damaged
part file, `pipelines.parts.DamagedPartError`) is logged by its worker as "Compute Failed" with the traceback,
before the driver reports the same error as the one line a caller's mistake gets. `pipelines.runner` registers
`QuietShutdown` on the local clusters it starts (never on a cluster given by address); every other record stays.
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

from r3fa.errors import UserError

HEARTBEAT_FAILURE = "Failed to communicate with scheduler during heartbeat"
COMPUTE_FAILED = "Compute Failed"  # the worker's record of a task that raised; its 4th argument: repr(exception)


def drop_heartbeat_failure(record: logging.LogRecord) -> bool:
    """A `logging` filter: False (drop) for the heartbeat-failure record, True for every other record."""
    return not record.getMessage().startswith(HEARTBEAT_FAILURE)


def drop_user_error_failure(record: logging.LogRecord) -> bool:
    """A `logging` filter: False (drop) for a task failure whose exception is a `UserError` (the driver reports
    it as one line), True for every other record."""
    if not (isinstance(record.msg, str) and record.msg.startswith(COMPUTE_FAILED) and len(record.args or ()) >= 4):
        return True
    return str(record.args[3]).split("(", 1)[0] not in _user_error_names()


def _user_error_names() -> set[str]:
    """The class names of `UserError` and of its subclasses imported so far."""
    names, todo = set(), [UserError]
    while todo:
        error = todo.pop()
        names.add(error.__name__)
        todo += error.__subclasses__()
    return names


class QuietShutdown(WorkerPlugin):
    """Installs `drop_heartbeat_failure` and `drop_user_error_failure` on the worker's `distributed.worker` logger."""

    name = "r3fa-quiet-shutdown"

    def setup(self, worker: object) -> None:
        log = logging.getLogger("distributed.worker")
        log.addFilter(drop_heartbeat_failure)
        log.addFilter(drop_user_error_failure)
