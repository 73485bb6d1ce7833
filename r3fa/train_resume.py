"""Resuming a training run: what a training checkpoint holds, whether it may continue this run, and what a fresh
run does with a previous one.

The engine (`r3fa.training.fit`) decides *when* to write and read checkpoints; this module holds *what* goes into
them and the rules for continuing, so that a newcomer finds the whole resume contract in one place.

Why it looks the way it does:
- **Resume is exact.** A run is a pure function of (config, shard set): the loader's order is the epoch's
  canonical order (`r3fa.loaders.order`, fixed by seed, epoch, shard set, shuffle and sampling, the same for
  every loader kind and world size) and can start at any sample, WPDC's vertex resampling draws from its own
  seeded generator, and every checkpoint stores the model, optimiser, scheduler, the samples of the epoch
  consumed, RNG states and the running epoch sums (of all ranks). A run killed mid-epoch and resumed from its
  last checkpoint therefore ends with the weights of a run never stopped (up to float non-associativity, which
  deterministic CPU kernels avoid).
- **A checkpoint is self-describing.** Every file is an `r3fa.checkpoint.model_payload` (so
  `r3fa.predictor.load_predictor` reads any of them), carrying the whitening statistics of the dataset's
  training split, the crop convention of the labels and the dataset manifest's hash; training checkpoints
  add `train_state`.
- **Resume is elastic, exact or refused.** The batch size is global, so a step consumes `batch_size` samples
  of the canonical order whatever the world size: a run stopped at any step continues on another number of
  processes or with the other loader kind and sees exactly the samples of the epoch it had not yet seen, each
  once. What fixes the order is recorded in every training checkpoint (`sample_order`: algorithm, shard set,
  seed, global batch size, shuffle, sampling); a change of any of them is refused with a `UserError` that
  names it and says how to start afresh (`sample_order_mismatch`), as is a checkpoint of another dataset or
  config (the loader kind and its thread count aside: they change neither the samples, nor labels, nor jitter;
  DALI's and OpenCV's JPEG decoders agree within a tolerance, so a change of kind is exact in samples, not
  bit-exact in weights). `resume=False` never continues an old run: it moves the folder's previous run aside
  (`replaced-<time>/`, `set_aside_previous_run`) and starts afresh, except that a checkpoint written under the
  same `run_id` (a retry of the same Prefect task run, `written_by`) is that attempt's own and is continued.
- **One run at a time writes a run folder.** Rank 0 holds `TrainLock` (`<out>/.r3fa-train.lock`) for the whole
  run, so a second run on the same folder (a retry started while a killed run's orphaned torchrun worker still
  trains there, say) stops at once with a `UserError` instead of interleaving its checkpoints with the other's.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r3fa.checkpoint import load_checkpoint, model_payload
from r3fa.dataset_info import DatasetInfo
from r3fa.errors import UserError
from r3fa.folder_lock import FolderLock
from r3fa.provenance import code_version
from r3fa.train_config import TrainConfig

# How an epoch's order and its partition are computed (`r3fa.loaders.order`); bump it when that changes, so that
# a checkpoint of the old order is refused instead of continued on a different one.
ORDER_ALGORITHM = "r3fa-canonical-order-v1"
# Config fields a resumed run may change: how batches are produced, not which samples, labels or jitter.
_RESUMABLE_CHANGES = {"loader": ("kind", "num_threads")}


@dataclass
class TrainState:
    """Where a run is: the loader position and the current epoch's running sums."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # steps of `epoch` already done
    global_step: int = 0
    loss_sum: float = 0.0  # over this process's samples of the current epoch (in a checkpoint: all processes')
    samples: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    nonfinite_steps: int = 0  # batches skipped in the whole run because their loss or gradient was not finite


def sample_order(cfg: TrainConfig, info: DatasetInfo) -> dict[str, Any]:
    """What fixes the training order of every epoch; a run resumes exactly only where all of it is unchanged.

    World size and loader kind are not in it: ranks take their parts of one canonical order, so a resumed run
    may change both (`r3fa.loaders.order`)."""
    return {
        "algorithm": ORDER_ALGORITHM,
        "shard_set": info.manifest_hash,
        "seed": cfg.seed,
        "global_batch_size": cfg.batch_size,
        "shuffle": cfg.loader.shuffle,
        "sampling": cfg.loader.sampling,
    }


def sample_order_mismatch(recorded: Any, current: dict[str, Any]) -> str | None:
    """Why a checkpoint whose `sample_order` is `recorded` cannot continue a run whose order is `current`
    (each changed field as `name old -> new`), or None when the orders are the same."""
    if not isinstance(recorded, dict):
        return "the checkpoint records no sample order (written before the canonical order)"
    changed = [f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in current.items() if recorded.get(k) != v]
    return "; ".join(changed) or None


def _comparable(config: Any) -> Any:
    """A dumped config without the fields a resumed run may change (`_RESUMABLE_CHANGES`)."""
    if not isinstance(config, dict):
        return config
    return {
        name: {k: v for k, v in section.items() if k not in _RESUMABLE_CHANGES[name]}
        if name in _RESUMABLE_CHANGES and isinstance(section, dict)
        else section
        for name, section in config.items()
    }


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "loss_generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loss_generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class ResumableRun:
    """The mutable pieces of one `fit` call, and how they go into and come out of a checkpoint."""

    def __init__(
        self, cfg: TrainConfig, info: DatasetInfo, model: nn.Module, optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, ddp: dict[str, Any],
        run_id: str | None = None,
    ) -> None:  # fmt: skip
        """Hold a run's pieces; its loss generator is seeded with `cfg.seed` and its state starts at zero.

        Args:
            cfg: the run's validated config.
            info: the shard set's whitening, identity and crop convention.
            model: the (unwrapped) model whose weights the checkpoints carry.
            optimizer: the optimiser of `model` (`r3fa.training.build_optimizer`).
            scheduler: the learning-rate schedule of `optimizer` (`r3fa.training.build_scheduler`).
            device: where the model lives (its CUDA RNG state is saved too).
            ddp: {"world_size", "loader_kind", "sync_batchnorm_layers"}, recorded in `meta.ddp`.
            run_id: who this run is (e.g. a Prefect task-run id), recorded in `train_state`.
        """
        self.cfg, self.info, self.model, self.device = cfg, info, model, device
        self.ddp, self.run_id = ddp, run_id
        self.optimizer, self.scheduler = optimizer, scheduler
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.state = TrainState()
        self.code_version = code_version()

    def model_checkpoint(self) -> dict[str, Any]:
        """What inference needs (`r3fa.checkpoint.model_payload`), with the run's provenance in `meta`."""
        return model_payload(
            self.cfg.model.name,
            self.cfg.model.kwargs,
            self.model.state_dict(),
            self.info.whitening,
            self.info.convention,
            meta={
                "manifest_hash": self.info.manifest_hash,
                "code_version": self.code_version,
                "config": self.cfg.model_dump(mode="json"),
                "ddp": dict(self.ddp),
            },
        )

    def training_checkpoint(self, epoch_sums: tuple[float, int] | None = None) -> dict[str, Any]:
        """The model checkpoint plus everything resuming needs (`train_state`).

        Args:
            epoch_sums: the current epoch's (loss sum, samples) over all processes
                (`r3fa.distributed.global_sums`); None: this process's own (one process, or at an epoch boundary
                where both are zero).
        """
        s = self.state
        loss_sum, samples = epoch_sums if epoch_sums is not None else (s.loss_sum, s.samples)
        return {
            **self.model_checkpoint(),
            "train_state": {
                "epoch": s.epoch,
                "step": s.step,
                "samples_consumed": s.step * self.cfg.batch_size,  # of epoch `epoch`'s canonical order
                "sample_order": sample_order(self.cfg, self.info),
                "global_step": s.global_step,
                "loss_sum": loss_sum,
                "samples": samples,
                "history": s.history,
                "nonfinite_steps": s.nonfinite_steps,
                "loader_kind": self.ddp["loader_kind"],
                "world_size": self.ddp["world_size"],
                "run_id": self.run_id,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": _rng_state(self.generator, self.device),
            },
        }

    def warm_start(self, payload: dict[str, Any]) -> None:
        """Start from another run's weights (same architecture; the whitening is this dataset's)."""
        if payload.get("model") != {"name": self.cfg.model.name, "kwargs": self.cfg.model.kwargs}:
            raise UserError(f"cannot warm-start {self.cfg.model.name} from a {payload.get('model')} checkpoint")
        self.model.load_state_dict(payload["state_dict"])

    def restore(self, payload: dict[str, Any], path: Path, rank: int = 0) -> None:
        """Continue from the training checkpoint `payload` (read from `path`), or refuse.

        The checkpoint may come from another world size or loader kind: the run continues at its
        `samples_consumed` (= `step` x the global batch size, which the order check keeps unchanged). Its
        epoch sums (of all processes) go to rank 0 alone, so the epoch's mean loss counts every sample once
        whatever the world size.

        Raises:
            UserError: the checkpoint is of another dataset, another sample order (seed, global batch size,
                shuffle, sampling, order algorithm) or another config; the message says what changed and how to
                start afresh.
        """
        fresh = f"start afresh with --fresh (resume=False), or delete {path.parent}"
        ts = payload.get("train_state") if isinstance(payload, dict) else None
        if not isinstance(ts, dict):
            raise UserError(f"{path}: not a training checkpoint (no train_state); {fresh}")
        meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
        found = meta.get("manifest_hash")
        if found != self.info.manifest_hash:
            raise UserError(
                f"{path} was trained on dataset {found}, not on this shard set ({self.info.manifest_hash}); {fresh}"
            )
        mismatch = sample_order_mismatch(ts.get("sample_order"), sample_order(self.cfg, self.info))
        if mismatch is not None:
            raise UserError(f"{path} cannot continue exactly here (another sample order: {mismatch}); {fresh}")
        if _comparable(meta.get("config")) != _comparable(self.cfg.model_dump(mode="json")):
            raise UserError(f"{path} was written by a run with another config; {fresh}")
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        _restore_rng(ts["rng"], self.generator, self.device)
        loss_sum, samples = (ts["loss_sum"], ts["samples"]) if rank == 0 else (0.0, 0)
        self.state = TrainState(
            ts["epoch"], ts["step"], ts["global_step"], loss_sum, samples, list(ts["history"]), ts["nonfinite_steps"],
        )  # fmt: skip


def written_by(checkpoint: Path, run_id: str | None) -> bool:
    """Whether the training checkpoint `checkpoint` was written under `run_id` (False for None or a bad file).

    Args:
        checkpoint: a training checkpoint (`last.pth`).
        run_id: the run asking (e.g. a Prefect task-run id, the same for every retry).

    Returns:
        True when its `train_state.run_id` is `run_id`: that checkpoint is this run's own earlier attempt.
    """
    if run_id is None:
        return False
    try:
        state = load_checkpoint(checkpoint).get("train_state")
    except (UserError, AttributeError):
        return False
    return isinstance(state, dict) and state.get("run_id") == run_id


class TrainLock(FolderLock):
    """Hold a training run folder for one run: `with TrainLock(out_dir): ...` (raises `UserError` if held)."""

    lock_name = ".r3fa-train.lock"
    doing = "trained"
    job = "training run"


def set_aside_previous_run(out_dir: Path) -> Path | None:
    """Move the files of the run in `out_dir` (checkpoints/, model.pth, metrics.csv) into
    `out_dir/replaced-<UTC time>/`, so that a fresh run neither continues nor mixes with it; returns that folder."""
    previous = [out_dir / name for name in ("checkpoints", "model.pth", "metrics.csv") if (out_dir / name).exists()]
    if not previous:
        return None
    aside = Path(tempfile.mkdtemp(prefix=time.strftime("replaced-%Y%m%dT%H%M%SZ-", time.gmtime()), dir=out_dir))
    for path in previous:
        path.rename(aside / path.name)
    return aside
