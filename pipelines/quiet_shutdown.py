"""A Dask worker plugin that keeps one shutdown race out of a finished build's output.

A worker whose heartbeat races its local cluster's shutdown logs "Failed to communicate with scheduler during
heartbeat" with a two-part traceback (dask/distributed#7105, open upstream). The build has finished by then, and
with a local cluster the scheduler lives in the driver's process, so a scheduler that really failed would fail
the build itself: the record says nothing a user can act on. `pipelines.runner` registers `QuietShutdown` on the
local clusters it starts (never on a cluster given by address).
"""

from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

HEARTBEAT_FAILURE = "Failed to communicate with scheduler during heartbeat"


def drop_heartbeat_failure(record: logging.LogRecord) -> bool:
    """A `logging` filter: False (drop) for the heartbeat-failure record, True for every other record."""
    return not record.getMessage().startswith(HEARTBEAT_FAILURE)


class QuietShutdown(WorkerPlugin):
    """Installs `drop_heartbeat_failure` on the worker's `distributed.worker` logger."""

    name = "r3fa-quiet-shutdown"

    def setup(self, worker: object) -> None:
        logging.getLogger("distributed.worker").addFilter(drop_heartbeat_failure)
