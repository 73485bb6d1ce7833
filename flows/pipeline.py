"""Prefect flow `pipeline`: the main job, build shards -> train -> evaluate, as `r3fa demo` runs it.

AFLW2000-3D is the only 300W-LP-format source here, so the job trains on one fold of it and evaluates on
another (`r3fa.folds`: sorted position i is in fold i % n_folds; the mix config picks the training fold and
this config the evaluation fold, and the flow refuses a run where they are the same). The held-out fold gets
three rows measured on the same images: the trained model, the mean-parameter baseline of the training set
(its whitening mean, the labels' mean) and the 3DDFA-V2 mb05 peer; mb05 also gets its full-benchmark row,
which is fair for it (it was trained on 300W-LP). Every row's `evaluated on` says which images it used.

The stages are the other flows (`build_dataset`, `train`, `evaluate`), called as subflows, so each has its
own run, retries and artifacts; this flow adds the combined table artifact `pipeline-nme`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from flows.build_dataset import build_dataset_flow
from flows.evaluate import evaluate_flow, mean_params_task
from flows.train import train_flow
from pipelines.mix import MixConfig, load_mix
from r3fa.config import load_config, write_resolved
from r3fa.paths import PROJECT_ROOT, data_root
from r3fa.report import table_rows


class PipelineConfig(BaseModel):
    """`configs/demo.yaml`: which configs each stage uses and what the evaluation compares.

    Relative paths are taken from the project root; `peer_checkpoint` from the reference-data root.
    """

    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Path("runs/demo")
    mix: Path = Path("configs/mix/demo.yaml")
    train: Path = Path("configs/train/demo.yaml")
    build_workers: int = Field(2, ge=0)  # Dask LocalCluster workers of the shard build (0: in this process)
    benchmark: str = "aflw2000-3d"
    n_folds: int = Field(2, ge=2)
    eval_fold: int = Field(1, ge=0)
    eval_batch_size: int = Field(128, ge=1)
    model_label: str = "R3FA demo"
    peer_checkpoint: Path = Path("3ddfa_v2/weights/mb05_120x120.pth")
    peer_label: str = "3DDFA-V2 mb05"


def _in_project(path: Path) -> Path:
    return path if path.is_absolute() else PROJECT_ROOT / path


def training_fold(mix: MixConfig, n_folds: int, eval_fold: int) -> int:
    """The AFLW2000-3D fold the mix trains on, checked to be disjoint from the evaluation fold.

    Raises:
        ValueError: the mix uses all of AFLW2000-3D, another fold split, or the evaluation fold itself.
    """
    folds = {(s.fold, s.n_folds) for s in mix.sources if s.kind == "aflw2000_3d"}
    if len(folds) != 1:
        raise ValueError(f"the mix must use exactly one fold of AFLW2000-3D, it uses {sorted(folds, key=str)}")
    ((fold, mix_folds),) = folds
    if fold is None or mix_folds != n_folds or fold == eval_fold:
        raise ValueError(f"the mix trains on fold {fold} of {mix_folds}: not disjoint from fold {eval_fold} of {n_folds}")
    return fold


@flow(name="pipeline", log_prints=True)
def pipeline_flow(config: str = "configs/demo.yaml") -> dict[str, Any]:
    """Build the shard set, train on it, evaluate on the held-out fold and publish the NME table.

    Args:
        config: a pipeline config (`PipelineConfig`), e.g. `configs/demo.yaml`.

    Returns:
        {"reports": the nme.json documents, trained model first; "notes": what each row was measured on;
        "artifacts": paths of the files a reader wants}.
    """
    cfg = load_config(_in_project(Path(config)), PipelineConfig)
    out = _in_project(cfg.out_dir)
    write_resolved(cfg, out)
    shard_dir, train_dir, eval_dir = out / "shards", out / "train", out / "eval"

    train_fold = training_fold(load_mix(_in_project(cfg.mix)), cfg.n_folds, cfg.eval_fold)
    built = build_dataset_flow(str(_in_project(cfg.mix)), str(shard_dir), workers=cfg.build_workers)
    trained = train_flow(str(_in_project(cfg.train)), str(shard_dir), str(train_dir))

    fold = {"fold": cfg.eval_fold, "n_folds": cfg.n_folds, "batch_size": cfg.eval_batch_size}
    peer = str(data_root() / cfg.peer_checkpoint)
    runs = {
        "model, fold": eval_dir / "model-fold",
        "mean params, fold": eval_dir / "mean-params-fold",
        "peer, fold": eval_dir / "peer-fold",
        "peer, full": eval_dir / "peer-full",
    }
    mean_report = mean_params_task(
        str(shard_dir), cfg.benchmark, cfg.eval_fold, cfg.n_folds, str(runs["mean params, fold"]),
        "mean parameters (training set)",
    )  # fmt: skip
    peer_fold = evaluate_flow(peer, cfg.benchmark, str(runs["peer, fold"]), label=cfg.peer_label, **fold)
    ours = evaluate_flow(
        trained["model_path"], cfg.benchmark, str(runs["model, fold"]), label=cfg.model_label,
        compare_with=[str(runs["mean params, fold"]), str(runs["peer, fold"])], **fold,
    )  # fmt: skip
    peer_full = evaluate_flow(
        peer, cfg.benchmark, str(runs["peer, full"]), batch_size=cfg.eval_batch_size, label=cfg.peer_label
    )

    reports = [ours["report"], mean_report, peer_fold["report"], peer_full["report"]]
    create_table_artifact(
        key="pipeline-nme",
        table=table_rows(reports),
        description=(
            f"NME (%) on {cfg.benchmark}: the model trained on fold {train_fold}, the mean-parameter baseline "
            f"and {cfg.peer_label} on the held-out fold {cfg.eval_fold}; {cfg.peer_label} also on all images"
        ),
    )
    ours_mean, baseline_mean = ours["report"]["bins"]["mean"], mean_report["bins"]["mean"]
    notes = [
        f"trained on {cfg.benchmark} fold {train_fold} of {cfg.n_folds} ({built['summary']}); "
        f"the first three rows are on the held-out fold {cfg.eval_fold}, the last on the whole benchmark",
        f"trained model vs mean-parameter baseline on fold {cfg.eval_fold}: mean NME {ours_mean:.3f} % vs "
        f"{baseline_mean:.3f} % ({'beats' if ours_mean < baseline_mean else 'DOES NOT beat'} the baseline)",
    ]
    for note in notes:
        print(note)
    artifacts = {
        "pipeline config": str(out / "config.resolved.yaml"),
        "shards": str(shard_dir),
        "model": trained["model_path"],
        "training metrics": trained["metrics_path"],
        "fold table": ours["comparison"]["table"],
        "fold CED": ours["comparison"]["ced"],
        **{f"nme.json ({name})": str(run / "nme.json") for name, run in runs.items()},
    }
    return {"reports": reports, "notes": notes, "artifacts": artifacts}
