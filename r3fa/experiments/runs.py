"""One run of an experiment: train a (variant, seed) on its shard set, choose the checkpoint on the
validation split, evaluate that checkpoint on the held-out benchmark fold.

The order is the point. `select_epoch` reads the run's `metrics.csv` (its `val_nme` column, measured on the
shard set's own val split, drawn from the training fold) and nothing else; only then is the benchmark loaded,
once, for the chosen checkpoint. The evaluation images therefore cannot influence which weights are reported.

A finished run leaves `done.json` (`run_digest`: the hash of its resolved training config, the shard set's
content and the evaluation settings; the chosen epoch and its protocol numbers): a second call with the same hash returns it without
training. A run folder that holds another config's run is refused rather than mixed.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from r3fa.atomic import write_text_atomic
from r3fa.benchmarks import load_benchmark
from r3fa.errors import UserError
from r3fa.evaluation import evaluate
from r3fa.experiments.config import config_hash
from r3fa.predictor import load_predictor
from r3fa.shard_contract import load_manifest
from r3fa.train_config import TrainConfig
from r3fa.training import fit

DONE = "done.json"


@dataclass(frozen=True)
class EvalTarget:
    """Where runs are evaluated: a benchmark, optionally one fold of it."""

    benchmark: str
    fold: int | None
    n_folds: int
    batch_size: int


def select_epoch(metrics_csv: str | Path) -> tuple[int, float]:
    """The epoch with the lowest validation NME in a run's `metrics.csv` (first one on ties).

    Reads only the `epoch` and `val_nme` columns. Non-finite values are skipped.

    Returns:
        (epoch, its val_nme).

    Raises:
        UserError: no epoch has a finite validation NME (nothing trustworthy to promote).
    """
    with Path(metrics_csv).open(newline="") as fh:
        rows = [(int(r["epoch"]), float(r["val_nme"])) for r in csv.DictReader(fh)]
    finite = [(e, v) for e, v in rows if math.isfinite(v)]
    if not finite:
        raise UserError(f"{metrics_csv}: no epoch has a finite val_nme; the run diverged, nothing to evaluate")
    return min(finite, key=lambda row: row[1])


def run_digest(train_cfg: TrainConfig, shard_dir: Path, target: EvalTarget) -> str:
    """What makes two runs the same: the training config's non-default fields, the shard set's content (every
    shard's file, count and sha256 from its manifest) and the evaluation target.

    Defaults are left out so that a field added to `TrainConfig` later, with the old behaviour as its default,
    does not invalidate finished runs; the shard set is identified by its bytes, not by the builder's config
    schema, so a rebuild that writes the same shards is the same data.

    Raises:
        UserError: no readable manifest in `shard_dir` (`r3fa.shard_contract.load_manifest`).
    """
    shards = sorted((e.file, e.count, e.sha256) for e in load_manifest(shard_dir).shards)
    return config_hash(train_cfg.model_dump(mode="json", exclude_defaults=True), shards, target.__dict__)


def run_one(
    train_cfg: TrainConfig, shard_dir: Path, run_dir: Path, target: EvalTarget, label: str, progress: bool = False
) -> dict:
    """Train, select on val, evaluate; or return the finished run's `done.json` when its hash matches.

    Args:
        train_cfg: the resolved training config (seed and epochs set; epoch checkpoints kept).
        shard_dir: the variant's shard set.
        run_dir: this run's folder (`train/`, `eval/`, `done.json`).
        target: the held-out evaluation.
        label: the row name in the evaluation's files.
        progress: show the training progress bar.

    Returns:
        The done document: {"hash", "label", "seed", "epochs", "steps", "selected_epoch", "val_nme",
        "checkpoint", "eval_dir", "bins"}.

    Raises:
        UserError: `run_dir` holds a run of a different config, or the run diverged.
    """
    digest = run_digest(train_cfg, shard_dir, target)
    done_path = run_dir / DONE
    if done_path.is_file():
        done = json.loads(done_path.read_text())
        if done.get("hash") == digest:
            return done
        raise UserError(f"{run_dir} holds a finished run of another config: remove it or choose another --out")
    stamp = run_dir / "run.hash"
    if stamp.is_file() and stamp.read_text().strip() != digest:
        raise UserError(f"{run_dir} holds an unfinished run of another config: remove it or choose another --out")
    write_text_atomic(stamp, digest + "\n")

    result = fit(train_cfg, shard_dir, run_dir / "train", resume=True, progress=progress)
    epoch, val_nme = select_epoch(result.metrics_path)
    checkpoint = run_dir / "train" / "checkpoints" / f"epoch_{epoch:03d}.pth"
    bench = load_benchmark(target.benchmark, fold=target.fold, n_folds=target.n_folds)
    evaluated = evaluate(
        load_predictor(checkpoint), bench, run_dir / "eval", target.batch_size, model_name=label, checkpoint=checkpoint
    )
    done = {
        "hash": digest,
        "label": label,
        "seed": train_cfg.seed,
        "epochs": train_cfg.epochs,
        "steps": int(result.history[-1]["global_step"]) if result.history else 0,
        "selected_epoch": epoch,
        "val_nme": val_nme,
        "checkpoint": str(checkpoint),
        "eval_dir": str(run_dir / "eval"),
        "bins": evaluated.report["bins"],
    }
    write_text_atomic(done_path, json.dumps(done, indent=2) + "\n")
    return done
