"""Prefect flow `retrain-and-eval`: the scheduled job that keeps the promoted model the best one measured.

Each run (a) makes sure a shard set exists for the current inputs, (b) trains a candidate, (c) evaluates it
and the mean-parameter baseline of its training set on AFLW2000-3D (or one fold of it) and (d) asks
`r3fa.promotion` whether it passes the gate (whole, finite metrics; better than the baseline; better than the
promoted model); the registry records every candidate, promoted or rejected, with the reason. The run ends
in a Completed state named `Promoted` or `Rejected` (message: the reason), so a rejected retrain shows as
such in the run list, not only in its artifact.

Why it looks the way it does:
- **Shards are keyed by their inputs.** The shard set lives in `out_dir/shards/<key>`, a short hash of the
  resolved mix config and of the inputs hash the builder's manifest records (every input file's path, size
  and mtime, `pipelines.manifest.inputs_hash`). A folder whose manifest records this config and these inputs
  is reused; otherwise the shards are built, and an interrupted build re-run into the same folder resumes
  from its `.done` markers. Changed inputs get a new folder, so a training that reads the old set is never
  disturbed, and every candidate's checkpoint names the manifest it was trained on.
- **Candidates are judged on the same images.** The registry compares candidates on the same benchmark
  name only, so a fold evaluation is recorded as `aflw2000-3d-fold1of20`: a demo run on a fold never
  displaces a model measured on the whole benchmark, and the other way round.
- **The stages are the other flows** (`build-dataset`, `train`, `evaluate`), called as subflows with their
  own runs, retried tasks without result cache and artifacts; the registry write is this flow's own task
  (NO_CACHE, retries with exponential backoff for what can go differently, `flows.retry`). Every exception
  propagates and fails the run (a diverged training, say); a bad candidate or a bad registry entry does not:
  it is a rejection, or a note.

Artifacts: `retrain-decision` (markdown: the decision, its reason, where the files are) and `retrain-nme`
(table: the candidate's and the previously promoted model's NME bins).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.tasks import exponential_backoff

from flows.build_dataset import build_dataset_flow
from flows.evaluate import evaluate_flow, mean_params_task
from flows.figures import compare_runs, publish_evaluation
from flows.retry import retry_transient
from flows.train import train_flow
from pipelines.manifest import inputs_hash
from pipelines.mix import MixConfig, load_mix
from pipelines.plan import make_plan
from r3fa.dataset_info import read_dataset_info
from r3fa.evaluation import NonFiniteResultError
from r3fa.provenance import code_version
from r3fa.paths import PROJECT_ROOT
from r3fa.promotion import Candidate, Decision, Gate, promote_if_better, promoted_entry
from r3fa.shard_contract import ManifestError, load_manifest

BINS = ("0-30", "30-60", "60-90", "mean", "std")


def _in_project(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path


def shard_set_key(mix: MixConfig) -> tuple[str, str]:
    """The folder name of the shard set of `mix` and the inputs hash its manifest will record.

    Args:
        mix: the validated mix config.

    Returns:
        (key, inputs sha256): the key is a short sha256 of the resolved config and the inputs hash
        (`pipelines.manifest.inputs_hash`: every input file's path, size and mtime), so it changes with either.
    """
    inputs, _ = inputs_hash(make_plan(mix).items)
    return hashlib.sha256(f"{mix.model_dump_json()}\n{inputs}".encode()).hexdigest()[:16], inputs


def is_current(shard_dir: Path, mix: MixConfig, inputs: str) -> bool:
    """Whether `shard_dir` holds a complete shard set (its manifest) of this config and these inputs; a missing,
    damaged or older manifest is not current (the build then rebuilds the set, reusing its complete shards)."""
    try:
        manifest = load_manifest(shard_dir)
    except ManifestError:
        return False
    return manifest.inputs.sha256 == inputs and manifest.config == mix.model_dump(mode="json")


def benchmark_name(benchmark: str, fold: int | None, n_folds: int) -> str:
    """The name candidates are compared under: the benchmark, plus the fold when only one fold is used."""
    return benchmark if fold is None else f"{benchmark}-fold{fold}of{n_folds}"


def check_held_out(mix: MixConfig, benchmark: str, fold: int | None, n_folds: int) -> None:
    """Refuse to evaluate on AFLW2000-3D images that the mix trains on.

    Raises:
        ValueError: an AFLW2000-3D source of the mix covers the evaluated images.
    """
    if not benchmark.startswith("aflw2000-3d"):
        return
    for source in mix.sources:
        if source.kind != "aflw2000_3d":
            continue
        # positions i with i % a == f and i % b == g exist iff f = g (mod gcd(a, b))
        if source.fold is None or fold is None or (source.fold - fold) % math.gcd(source.n_folds, n_folds) == 0:
            raise ValueError(
                f"the mix trains on AFLW2000-3D (fold {source.fold} of {source.n_folds}), which overlaps the "
                f"evaluated images (fold {fold} of {n_folds}): pick disjoint folds"
            )


@task(
    name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=exponential_backoff(5),
    retry_condition_fn=retry_transient,
)  # fmt: skip
def promote_task(registry: str, candidate: Candidate, gate: Gate) -> Decision:
    """Record `candidate` in the registry, promoting it when it passes the gate (`r3fa.promotion`)."""
    return promote_if_better(registry, candidate, gate)


def _metric(metrics: dict, name: str) -> Any:
    value = metrics.get(name)
    return round(value, 3) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _nme_row(name: str, metrics: dict | None) -> dict[str, Any]:
    return {"model": name, **{f"{b} (%)": _metric(metrics or {}, b) for b in BINS}}


def publish(decision: Decision, shard_dir: Path, registry: Path, rebuilt: bool) -> None:
    """Create the `retrain-decision` markdown and `retrain-nme` table artifacts of one decision."""
    c, previous = decision.candidate, decision.previous
    verdict = "PROMOTED" if decision.promoted else "REJECTED"
    before = _metric((previous or {}).get("metrics", {}), "mean")
    create_table_artifact(
        key="retrain-nme",
        table=[
            _nme_row("candidate", c.metrics),
            _nme_row("promoted before this run", (previous or {}).get("metrics")),
            _nme_row("mean-parameter baseline", c.baseline),
        ],
        description=(
            f"NME (%) on {c.benchmark}: this run's candidate, the model promoted before it and the mean-parameter "
            "baseline of the candidate's training set"
        ),
    )
    notes = "".join(f"- note: {note}\n" for note in decision.notes)
    create_markdown_artifact(
        key="retrain-decision",
        markdown=(
            f"# Candidate {verdict}\n\n{decision.reason}.\n\n{notes}\n"
            f"| | mean NME (%) on {c.benchmark} |\n|---|---|\n| candidate | {_metric(c.metrics, 'mean')} |\n"
            f"| promoted before | {before} |\n| mean-parameter baseline | {_metric(c.baseline or {}, 'mean')} |\n\n"
            f"- candidate: `{c.checkpoint}`\n- previously promoted: `{(previous or {}).get('checkpoint', '-')}`\n"
            f"- shards: `{shard_dir}` ({'built by this run' if rebuilt else 'reused: inputs unchanged'})\n"
            f"- dataset manifest sha256: `{c.manifest_hash}`\n- code: `{c.code_version}`\n- registry: `{registry}`\n"
        ),
        description="the promotion decision of this retrain run",
    )


@flow(name="retrain-and-eval", log_prints=True)
def retrain_and_eval_flow(
    mix: str = "configs/mix/demo.yaml",
    train: str = "configs/train/demo.yaml",
    out_dir: str = "runs/retrain",
    registry: str = "runs/retrain/registry.json",
    warm_start: bool = False,
    benchmark: str = "aflw2000-3d",
    eval_fold: int | None = 1,
    n_folds: int = 2,
    build_workers: int = 2,
    build_scheduler: str | None = None,
    train_overrides: dict[str, Any] | None = None,
    baseline_margin: float = 0.0,
    max_mean_nme: float | None = None,
) -> State:
    """Build shards if the inputs changed, train a candidate, evaluate it and promote it only if it is better.

    Relative paths are taken from the project root.

    Args:
        mix: the mix config of the training data (`configs/mix/*.yaml`).
        train: the training config (`configs/train/*.yaml`).
        out_dir: folder of the shard sets (`shards/<inputs hash>`) and of every run's training and evaluation.
        registry: the promotion registry file (`r3fa.promotion`).
        warm_start: start from the promoted model's weights instead of a random init (from scratch when
            nothing is promoted yet).
        benchmark: the benchmark candidates are judged on (`aflw2000-3d` and its variants).
        eval_fold: evaluate on this fold of `n_folds` only (`r3fa.folds`); None: the whole benchmark.
        n_folds: number of folds.
        build_workers: processes of the shard build's local Dask cluster (0: build in the flow's process).
        build_scheduler: address of an existing Dask scheduler (`tcp://host:8786`) to build the shards on.
        train_overrides: top-level training config fields to replace (e.g. {"epochs": 1}).
        baseline_margin: NME points by which a candidate must beat the mean-parameter baseline (`Gate`).
        max_mean_nme: a candidate's mean NME must also be below this (percent; None: no cap).

    Returns:
        A Completed state named `Promoted` or `Rejected` whose result (what calling the flow returns) is
        {"promoted": bool, "reason", "notes", "candidate": the registry entry's fields, "shard_dir",
        "rebuilt": bool}.
    """
    mix_path, out, registry_path = _in_project(mix), _in_project(out_dir), _in_project(registry)
    mix_cfg = load_mix(mix_path)
    check_held_out(mix_cfg, benchmark, eval_fold, n_folds)
    key, inputs = shard_set_key(mix_cfg)
    shard_dir = out / "shards" / key
    rebuilt = not is_current(shard_dir, mix_cfg, inputs)
    if rebuilt:
        build_dataset_flow(str(mix_path), str(shard_dir), workers=build_workers, scheduler=build_scheduler)
    else:
        print(f"shards: {shard_dir} (inputs unchanged, reused)")

    run_dir = out / "runs" / flow_run.get_name()
    promoted = promoted_entry(registry_path) if warm_start else None
    init_from = promoted["checkpoint"] if promoted else None
    trained = train_flow(
        str(_in_project(train)), str(shard_dir), str(run_dir / "train"), progress=False,
        overrides=train_overrides, init_from=init_from,
    )  # fmt: skip
    try:
        metrics = evaluate_flow(
            trained["model_path"], benchmark, str(run_dir / "eval"), fold=eval_fold, n_folds=n_folds,
            label=f"candidate {run_dir.name}",
        )["report"]["bins"]  # fmt: skip
    except NonFiniteResultError as err:  # a broken candidate is a rejection (no metrics), not a failed run
        print(f"evaluation: {err}")
        metrics = {}
    baseline = mean_params_task(
        str(shard_dir), benchmark, eval_fold, n_folds, str(run_dir / "eval-mean-params"),
        "mean parameters (training set)",
    )  # fmt: skip

    candidate = Candidate(
        checkpoint=trained["model_path"],
        metrics=metrics,
        manifest_hash=read_dataset_info(shard_dir).manifest_hash,
        code_version=code_version(),
        benchmark=benchmark_name(benchmark, eval_fold, n_folds),
        run_id=str(flow_run.get_id()),
        baseline=baseline["bins"],
    )
    decision = promote_task(str(registry_path), candidate, Gate(baseline_margin, max_mean_nme))
    publish(decision, shard_dir, registry_path, rebuilt)
    compared = compare_runs([run_dir / "eval", run_dir / "eval-mean-params"], run_dir / "comparison")
    verdict = "PROMOTED" if decision.promoted else "REJECTED"
    publish_evaluation(run_dir / "eval", "retrain-figures", f"Candidate {verdict}: {decision.reason}", compared)
    for note in decision.notes:
        print(f"registry: {note}")
    print(f"{'promoted' if decision.promoted else 'rejected'}: {decision.reason}")
    result = {
        "promoted": decision.promoted,
        "reason": decision.reason,
        "notes": decision.notes,
        "candidate": asdict(candidate),
        "shard_dir": str(shard_dir),
        "rebuilt": rebuilt,
    }
    return Completed(data=result, name="Promoted" if decision.promoted else "Rejected", message=decision.reason)
