"""Prefect flow `experiment`: a grid of variants x seeds, built, trained, selected on val, evaluated, compared.

Thin over `r3fa.experiments`: for each distinct mix of the grid it builds (or reuses) one shard set, in a folder
named by the mix's hash (`build-dataset` subflow, which itself resumes; skipped when the folder already holds the
complete shard set of the same mix and inputs); each (variant, seed) is one task that
trains for the experiment's step budget, chooses its checkpoint on the validation split and evaluates it on the
held-out fold (`r3fa.experiments.runs.run_one`, which skips a finished run); the report
(`r3fa.experiments.comparison`) is written as files and published as artifacts (`experiment-<name>-table`,
`experiment-<name>-report`).

Layout of `out_dir`: `mixes/<key>.yaml`, `shards/<key>/`, `runs/<variant>/seed-<s>/{train,eval,done.json}`,
`report.json`, `report.md`, `ced.png`, `ced_bins.png`, `config.resolved.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from flows.build_dataset import build_dataset_flow
from flows.figures import publish_figures
from flows.retrain_and_eval import check_held_out, is_current, shard_set_key
from flows.retry import retry_transient
from pipelines.mix import MixConfig
from r3fa.atomic import write_text_atomic
from r3fa.config import describe_validation_error, write_resolved
from r3fa.errors import UserError
from r3fa.experiments.comparison import COLUMNS, write_report
from r3fa.experiments.config import ExperimentConfig, in_project, load_experiment, mix_key, resolve_train, variant_mix
from r3fa.experiments.runs import EvalTarget, run_one


def _mix_file(cfg: ExperimentConfig, raw: dict, out: Path, variant: str) -> tuple[str, Path, MixConfig]:
    """Validate a variant's mix, check it is disjoint from the evaluation fold, write it as YAML."""
    try:
        mix = MixConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, f"mix of variant {variant}")) from None
    try:
        check_held_out(mix, cfg.benchmark, cfg.eval_fold, cfg.n_folds)
    except ValueError as err:
        raise UserError(f"variant {variant}: {err}") from None
    key = mix_key(raw)
    path = out / "mixes" / f"{key}.yaml"
    write_text_atomic(path, yaml.safe_dump(raw, sort_keys=False))
    return key, path, mix


@task(name="experiment-run", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def run_task(cfg: ExperimentConfig, variant: str, seed: int, shard_dir: str, run_dir: str) -> dict:
    """One (variant, seed): train on the budget, select on val, evaluate on the held-out fold (or reuse it)."""
    spec = next(v for v in cfg.variants if v.name == variant)
    train_cfg = resolve_train(cfg, spec, seed, Path(shard_dir))
    target = EvalTarget(cfg.benchmark, cfg.eval_fold, cfg.n_folds, cfg.eval_batch_size)
    done = run_one(train_cfg, Path(shard_dir), Path(run_dir), target, label=f"{variant} seed {seed}")
    print(f"{variant} seed {seed}: {done['steps']} steps, epoch {done['selected_epoch']} chosen on val "
          f"(val NME {done['val_nme']:.3f} %), held-out mean NME {done['bins']['mean']:.3f} %")  # fmt: skip
    return done


def _table(report: dict) -> list[dict[str, str]]:
    rows = []
    for variant, entry in report["variants"].items():
        row = {"variant": variant, "seeds": str(len(entry["seeds"]))}
        for c in COLUMNS:
            i = entry["nme"][c]
            row[f"{c} (%)"] = f"{i['mean']:.3f}" + ("" if i["low"] is None else f" [{i['low']:.3f}, {i['high']:.3f}]")
            diff = entry.get("vs_reference", {}).get(c)
            row[f"{c} vs ref"] = "-" if diff is None else (
                f"{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}] {diff['verdict']}"
            )
        rows.append(row)
    return rows


def _artifact_key(name: str, kind: str) -> str:
    return f"experiment-{name.lower().replace('_', '-')}-{kind}"


@flow(name="experiment", log_prints=True)
def experiment_flow(config: str, out_dir: str | None = None) -> dict[str, Any]:
    """Run an experiment grid (`configs/experiments/*.yaml`) and write its comparison report.

    Args:
        config: the experiment YAML.
        out_dir: replaces the config's `out_dir` (relative paths from the project root).

    Returns:
        {"report": the report.json document, "paths": {"json", "markdown", "ced", "ced_bins"} as strings,
        "out_dir": the experiment folder}.
    """
    cfg = load_experiment(in_project(Path(config)), out_dir)
    out = in_project(cfg.out_dir)
    write_resolved(cfg, out)
    shard_dirs: dict[str, Path] = {}
    for variant in cfg.variants:
        key, mix_path, mix = _mix_file(cfg, variant_mix(cfg, variant), out, variant.name)
        done = out / "shards" / key in shard_dirs.values() or is_current(out / "shards" / key, mix, shard_set_key(mix)[1])
        if not done:  # a complete shard set of the same mix and inputs is reused without starting a build
            build_dataset_flow(str(mix_path), str(out / "shards" / key), workers=cfg.build_workers)
        shard_dirs[variant.name] = out / "shards" / key
    runs: dict[str, list[dict]] = {variant.name: [] for variant in cfg.variants}
    for seed in cfg.seeds:  # seed-major: a stopped experiment has every variant at the same number of seeds
        for name, done in runs.items():
            done.append(run_task(cfg, name, seed, str(shard_dirs[name]), str(out / "runs" / name / f"seed-{seed}")))
    report, paths = write_report(out, cfg.name, runs, cfg.reference_name, cfg.bootstrap.samples, cfg.bootstrap.seed)
    create_table_artifact(
        key=_artifact_key(cfg.name, "table"),
        table=_table(report),
        description=f"experiment {cfg.name}: NME (%) per variant and |yaw| bin with 95 % intervals",
    )
    publish_figures(
        _artifact_key(cfg.name, "report"),
        f"Experiment {cfg.name}",
        {"CED of every variant, all images": paths["ced"], "CED per |yaw| bin": paths["ced_bins"]},
        description=f"experiment {cfg.name}: comparison report ({paths['json']})",
        intro=paths["markdown"].read_text().split("\n", 1)[1],
    )
    return {"report": report, "paths": {k: str(v) for k, v in paths.items()}, "out_dir": str(out)}
