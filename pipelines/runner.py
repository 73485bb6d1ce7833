"""Distribute shard builds over Dask: with `pipelines.quiet_shutdown`, the only code that imports dask.

One task per shard. By default a `distributed.LocalCluster` of `workers` single-threaded worker processes
is started and closed again; with `scheduler` the tasks go to an existing cluster. Results (small counts)
are handed to `on_result` as each task finishes (`as_completed`), which drives the progress display;
samples never travel to the driver. `workers=0` without a scheduler runs the tasks in this process, in
order (debugging, tests). Dask's INFO lines (cluster start and stop, workers registering: about 30 a build)
are held back to WARNING while the tasks run, so a build in a Prefect flow or the demo shows progress, not them.

The local cluster's workers run without Dask's statistical profiler (`distributed.worker.profile`): it samples
the running task every 10 ms and keeps the last 1,000 one-second profiles, so a worker's memory grew with the
time it had worked, for the first ~17 minutes (measured: +0.17 MB a phase-1 part, 185 -> 218 MB over 192
parts; flat without it), which a build's size decides. They also drop one log record: a worker whose heartbeat
races the cluster's shutdown logs "Failed to communicate with scheduler during heartbeat" with a traceback
(dask/distributed#7105, open), which would end a finished build with an alarming ERROR (seen once, at the end
of a 1/10 rehearsal): `pipelines.quiet_shutdown` filters it out. A cluster given by `scheduler` keeps its own
settings.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")


def run_tasks(
    fn: Callable[[TaskT], ResultT],
    tasks: Sequence[TaskT],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    on_result: Callable[[ResultT], None] | None = None,
    names: Sequence[str] | None = None,
) -> list[ResultT]:
    """Run `fn(task)` for every task; return the results in completion order.

    Args:
        fn: the task function (must be importable by the workers; a module-level function).
        tasks: its arguments, one per task (picklable).
        workers: worker processes of the local cluster; 0 runs in this process.
        scheduler: address of an existing Dask scheduler (`tcp://host:8786`); overrides `workers`.
        on_result: called with each result as it arrives.
        names: Dask task keys (one per task), shown on the dashboard.

    Raises:
        The first exception a task raised (the remaining tasks are cancelled).
    """
    on_result = on_result or (lambda _: None)
    if not tasks:
        return []
    if scheduler is None and workers == 0:
        results = []
        for task in tasks:
            results.append(fn(task))
            on_result(results[-1])
        return results
    with _dask_warnings_only():
        return _run_on_dask(fn, tasks, workers, scheduler, on_result, names)


@contextlib.contextmanager
def _dask_warnings_only() -> Iterator[None]:
    """Raise the `distributed` loggers to WARNING for the duration (their level is restored after)."""
    import distributed  # noqa: F401  (its import sets the loggers' levels from dask's config: set ours after)

    dask_log = logging.getLogger("distributed")
    level = dask_log.level
    dask_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dask_log.setLevel(level)


def _run_on_dask(
    fn: Callable[[TaskT], ResultT],
    tasks: Sequence[TaskT],
    workers: int,
    scheduler: str | None,
    on_result: Callable[[ResultT], None],
    names: Sequence[str] | None,
) -> list[ResultT]:
    """`run_tasks` on a Dask cluster: a local one of `workers` processes, or the one at `scheduler`."""
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        with dask.config.set({"distributed.worker.profile.enabled": False}):  # the workers take the config at start
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.WARNING,
            )
    client = Client(scheduler or cluster)
    try:
        if cluster is not None:
            from pipelines.quiet_shutdown import QuietShutdown  # imports distributed, as this function does

            client.register_plugin(QuietShutdown())
        keys = list(names) if names is not None else None
        futures = [client.submit(fn, task, pure=False, key=keys[i] if keys else None) for i, task in enumerate(tasks)]
        results = []
        try:
            for future in as_completed(futures):
                results.append(future.result())
                future.release()
                on_result(results[-1])
        except BaseException:
            client.cancel(futures)
            raise
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

