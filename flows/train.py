"""Prefect flow `train`: runs the training engine (`r3fa.training.fit`) and publishes its metrics.

The flow is thin on purpose: the engine already checkpoints and resumes, so a retry of the task continues
from the last step checkpoint of its own failed attempt instead of starting over: the task passes its
task-run id (the same for every retry) as the engine's `run_id`, so with `resume=False` a retry continues its
own attempt and never another run's `last.pth` (which the first attempt moved aside). Only failures that can
go differently are retried (`flows.retry.retry_transient`): a missing shard set, a bad config, a checkpoint
that cannot resume or a diverged run fail at once. Training writes files, so the task never uses Prefect's
result cache (NO_CACHE). Artifacts: a progress artifact updated per epoch, the per-epoch metrics table and a
summary of where the model is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from flows.figures import publish_training_curves
from flows.progress import engine_logs
from flows.retry import retry_transient
from r3fa.config import load_config
from r3fa.train_config import TrainConfig
from r3fa.training import FitResult, fit


def _rounded(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}


@task(
    name="fit", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=retry_transient
)
def fit_task(
    cfg: TrainConfig, shard_dir: str, out_dir: str, resume: bool, progress: bool, init_from: str | None
) -> FitResult:
    """One call of the engine; a retry resumes from the checkpoints of its own failed attempt.

    Progress: the `train-progress` artifact follows the epochs; the engine's line per epoch (loss, validation
    NME, img/s, ETA) and its summary line go to the run's log.
    """
    progress_id = create_progress_artifact(progress=0.0, key="train-progress", description=f"training {out_dir}")

    def on_epoch_end(record: dict[str, Any]) -> None:
        update_progress_artifact(progress_id, progress=100.0 * (record["epoch"] + 1) / cfg.epochs)

    with engine_logs():
        return fit(
            cfg, shard_dir, out_dir, resume=resume, progress=progress, on_epoch_end=on_epoch_end, init_from=init_from,
            run_id=str(task_run.get_id()),
        )  # fmt: skip


@flow(name="train", log_prints=True)
def train_flow(
    config: str,
    shard_dir: str,
    out_dir: str,
    resume: bool = True,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    init_from: str | None = None,
) -> dict[str, Any]:
    """Train the model of `config` on the shard set `shard_dir` into `out_dir`.

    Args:
        config: a `configs/train/*.yaml` file.
        shard_dir: shard set built by `build_dataset` (manifest.json, train/val splits).
        out_dir: the run directory (checkpoints, metrics.csv, config.resolved.yaml, model.pth).
        resume: continue from `out_dir/checkpoints/last.pth` when present.
        progress: show the engine's progress bar in the logs/terminal.
        overrides: top-level config fields to replace (e.g. {"epochs": 2}).
        init_from: a checkpoint whose weights start a fresh run (warm start, e.g. the promoted model).

    Returns:
        {"model_path", "metrics_path", "out_dir", "final": last epoch's metrics, "resumed_from"}.
    """
    cfg = load_config(config, TrainConfig, **(overrides or {}))
    result = fit_task(cfg, shard_dir, out_dir, resume, progress, init_from)
    history = [_rounded(r) for r in result.history]
    create_table_artifact(
        key="train-metrics", table=history, description=f"per-epoch training metrics of {result.out_dir}"
    )
    final = history[-1] if history else {}
    create_markdown_artifact(
        key="train-model",
        markdown=(
            f"# Trained model\n\n- model: `{result.model_path}`\n- metrics: `{result.metrics_path}`\n"
            f"- config: `{Path(result.out_dir) / 'config.resolved.yaml'}`\n"
            f"- final epoch: {final.get('epoch')}, val NME (crop frame) {final.get('val_nme')} %\n"
        ),
        description="where the trained model and its logs are",
    )
    publish_training_curves(result.history, result.out_dir)
    return {
        "model_path": str(result.model_path),
        "metrics_path": str(result.metrics_path),
        "out_dir": str(result.out_dir),
        "final": final,
        "resumed_from": result.resumed_from,
    }
