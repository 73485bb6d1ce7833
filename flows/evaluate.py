"""Prefect flow `evaluate`: one checkpoint on one benchmark, published as Table-1-style artifacts.

Thin over the engine (`r3fa.evaluation.evaluate`): load the predictor, run the engine in a task (it
writes files, so no result cache), then publish a table artifact laid out like the paper's Table 1 (this
run, any earlier runs named in `compare_with`, the paper's and the published peer rows) and a markdown
artifact with the paths of every file written; keys `nme-<benchmark>-<label>-table` / `-files`, so the
runs of one pipeline (model, baselines) keep separate artifacts. The pipeline flow calls it for the trained model, and
`compare_with` lets it put the baselines' runs (mean parameters, 3DDFA-V2 mb05) in the same table.
`mean_params_task` measures the mean-parameter baseline itself (the pipeline's table row, and the floor of
the retrain flow's promotion gate).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.figures import publish_evaluation
from flows.progress import RunProgress, engine_logs
from flows.retry import retry_transient
from r3fa.benchmarks import load_benchmark
from r3fa.dataset_info import read_dataset_info
from r3fa.evaluation import MeanParamsPredictor, load_run, write_comparison
from r3fa.evaluation import evaluate as run_evaluation
from r3fa.predictor import load_predictor
from r3fa.report import table_rows


@task(name="evaluate", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def evaluate_task(
    checkpoint: str,
    model_name: str | None,
    label: str,
    benchmark: str,
    out_dir: str,
    fold: int | None,
    n_folds: int,
    batch_size: int,
) -> dict[str, Any]:
    """Run the engine; returns the `nme.json` document and the written paths (as strings).

    Progress: an `eval-progress` artifact follows the batches; the engine logs a line per 10 % of the images.
    """
    bench = load_benchmark(benchmark, fold=fold, n_folds=n_folds)
    predictor = load_predictor(checkpoint, model_name=model_name)
    progress = RunProgress("eval-progress", f"evaluating {label} on {bench.name}", "evaluate", min_step=None)
    with engine_logs():
        result = run_evaluation(
            predictor, bench, out_dir, batch_size, progress, model_name=label, checkpoint=checkpoint
        )
    return {"report": result.report, "paths": {k: str(v) for k, v in result.paths.items()}}


@task(name="evaluate-mean-params", cache_policy=NO_CACHE)
def mean_params_task(
    shard_dir: str, benchmark: str, fold: int | None, n_folds: int, out_dir: str, label: str
) -> dict[str, Any]:
    """The mean-parameter baseline of a shard set's training split (its whitening mean, the labels' mean) on
    `benchmark` (or one fold of it): the floor a trained model must beat. Returns its `nme.json` document."""
    info = read_dataset_info(shard_dir)
    predictor = MeanParamsPredictor.from_whitening(info.whitening, info.convention)
    bench = load_benchmark(benchmark, fold=fold, n_folds=n_folds)
    return run_evaluation(predictor, bench, out_dir, model_name=label).report


def artifact_key(*parts: str) -> str:
    """`nme-<parts>` as a Prefect artifact key: lowercase letters, digits and single dashes only."""
    raw = "-".join(["nme", *parts]).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", raw)).strip("-")


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    checkpoint: str,
    benchmark: str,
    out_dir: str,
    model_name: str | None = None,
    fold: int | None = None,
    n_folds: int = 2,
    batch_size: int = 128,
    label: str | None = None,
    compare_with: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate `checkpoint` on `benchmark` (or one fold of it) and publish the NME table.

    Args:
        checkpoint: an r3fa checkpoint or the raw 3DDFA-V2 mb05 `.pth`.
        model_name: registry name of the architecture (None: read from the checkpoint).
        benchmark: `aflw2000-3d`, `aflw2000-3d-reannotated` or `aflw`.
        out_dir: folder for this run's files (`nme.json`, `errors.parquet`, plots, `table.md`).
        fold: evaluate only this fold of `n_folds` (`r3fa.folds`); the full benchmark when None.
        n_folds: number of folds.
        batch_size: crops per forward pass.
        label: the row's name in the table (default: `model_name`, else the checkpoint's file name).
        compare_with: run folders of earlier evaluations to put in the same table and CED plot.

    Returns:
        {"report": nme.json document, "paths": this run's files, "comparison": combined table/plot paths}.
    """
    label = label or model_name or Path(checkpoint).stem
    run = evaluate_task(checkpoint, model_name, label, benchmark, out_dir, fold, n_folds, batch_size)
    others = list(compare_with or [])
    comparison = {k: str(v) for k, v in write_comparison([out_dir, *others], Path(out_dir) / "comparison").items()}
    reports = [run["report"], *(load_run(other)[0] for other in others)]
    create_table_artifact(
        key=artifact_key(benchmark, label, "table"),
        table=table_rows(reports),
        description=f"NME (%) on {benchmark}, laid out like the paper's Table 1; see the run's table.md notes",
    )
    files = {**run["paths"], **{f"comparison {k}": v for k, v in comparison.items()}}
    bins = table_rows([run["report"]], benchmarks=[])[0]
    headline = f"{label} on {benchmark} ({run['report']['evaluated_on']}): mean NME {bins['mean']} %"
    create_markdown_artifact(
        key=artifact_key(benchmark, label, "files"),
        markdown=(
            f"# {headline}\n\nbins 0-30 / 30-60 / 60-90: {bins['0-30']} / {bins['30-60']} / {bins['60-90']} %\n\n"
            + "\n".join(f"- {kind}: `{path}`" for kind, path in files.items())
            + "\n"
        ),
        description="where the evaluation's files are",
    )
    publish_evaluation(out_dir, artifact_key(benchmark, label, "figures"), headline, comparison if others else None)
    print(headline)
    return {**run, "comparison": comparison}
