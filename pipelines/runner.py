"""Distribute shard builds over Dask: the only module of the project that imports dask.

One task per shard. By default a `distributed.LocalCluster` of `workers` single-threaded worker processes
is started and closed again; with `scheduler` the tasks go to an existing cluster. Results (small counts)
are handed to `on_result` as each task finishes (`as_completed`), which drives the progress display;
samples never travel to the driver. `workers=0` without a scheduler runs the tasks in this process, in
order (debugging, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(scheduler or cluster)
    try:
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
