"""Prefect flow `build-dataset`: builds (or finishes building) a shard set with `pipelines.build.build_shards`.

The builder already resumes (complete shards are skipped, unfinished ones rebuilt) and runs its shards on a
Dask cluster (a LocalCluster of `workers` processes, or an existing scheduler), so the flow only wraps it in
a task without result cache (it writes files), retried only for failures that can go differently
(`flows.retry`), and publishes the counts of the manifest.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.figures import publish_shard_sheet
from flows.progress import RunProgress
from flows.retry import retry_transient
from pipelines.build import BuildSummary, build_shards


@task(
    name="build-shards", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10, retry_condition_fn=retry_transient
)
def build_shards_task(config: str, out_dir: str, workers: int, scheduler: str | None) -> BuildSummary:
    """One call of the builder; a retry finishes what the failed attempt left.

    Progress: a `build-progress` artifact and a log line per finished phase-1 part and per shard (counts of
    candidates made, then of samples written, as `r3fa shards build` shows them).
    """
    progress = RunProgress("build-progress", f"building {out_dir}", f"build {out_dir}")
    return build_shards(config, out_dir, workers=workers, scheduler=scheduler, progress=progress)


@flow(name="build-dataset", log_prints=True)
def build_dataset_flow(config: str, out_dir: str, workers: int = 2, scheduler: str | None = None) -> dict[str, Any]:
    """Build the shard set of a mix config.

    Args:
        config: a `configs/mix/*.yaml` file.
        out_dir: the shard-set folder.
        workers: processes of the local Dask cluster (0: build in this process).
        scheduler: address of an existing Dask scheduler (`tcp://host:8786`), used instead of a local cluster.

    Returns:
        {"out_dir", "summary": one line, "counts": the manifest's counts}.
    """
    summary = build_shards_task(config, out_dir, workers, scheduler)
    create_markdown_artifact(
        key="build-dataset-summary",
        markdown=f"# Shard set `{summary.out_dir}`\n\n{summary}\n\n- manifest: `{summary.out_dir / 'manifest.json'}`\n",
        description=f"shard set of {config}",
    )
    publish_shard_sheet(summary.out_dir)
    print(summary)
    return {"out_dir": str(summary.out_dir), "summary": str(summary), "counts": summary.counts}
