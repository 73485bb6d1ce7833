"""The training engine: plain functions that train a registry model on a shard set, with resume and DDP.

Laid out like torchvision's reference script: `build_*` factories, `train_one_epoch`, `validate`, and
`fit`, which wires them together with checkpointing; `main` is the command-line entry that `torchrun`
starts (`torchrun --nproc-per-node N -m r3fa.training --config ... --shards ... --out ...`). Nothing here
knows about Prefect: `flows/train.py` calls `fit` and publishes what it returns.

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
  (`replaced-<time>/`) and starts afresh, except that a checkpoint written under the same `run_id` (a retry of
  the same Prefect task run) is that attempt's own and is continued.
- **Batch size is global, and so are the BatchNorm statistics.** Under DDP each of the `world_size`
  processes takes `batch_size / world_size` samples per step from its own shard of the loader, and (with
  `sync_batchnorm`, the default) every BatchNorm layer normalises by the statistics of the whole global batch
  (`r3fa.sync_batchnorm`), so the paper's batch of 128 means the same thing on one device or eight. The
  checkpoints record it (`meta.ddp`: world size, loader kind, number of synchronised BatchNorm layers).
- **Divergence stops the run.** A batch whose loss or gradient is not finite does not step the optimiser;
  more than `max_nonfinite_steps` such batches in a run (default 0: the first) raise `DivergenceError`,
  and `r3fa.checkpoint.save_checkpoint` refuses any state dict with a NaN or an infinity, so a diverged run
  never leaves a model file behind. There is no gradient scaler to consult: AMP here is bfloat16 autocast,
  whose range is float32's, so every non-finite loss or gradient counts.

Progress: rank 0 logs one `key=value` line per epoch (loss, validation NME, img/s, ETA) and a summary line
at the end through the `r3fa.training` logger, terminal or not (`epoch_line`, `summary_line`); on a terminal
a rich bar shows the steps as well.

Outputs of `fit` in `out_dir`: `config.resolved.yaml`, `metrics.csv` (one row per epoch),
`checkpoints/last.pth` (rolling, for resume), `checkpoints/epoch_NNN.pth` and the final `model.pth`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from r3fa import losses, models
from r3fa.atomic import write_text_atomic
from r3fa.checkpoint import load_checkpoint, model_payload, save_checkpoint
from r3fa.config import load_config, write_resolved
from r3fa.crop import CropConvention
from r3fa.errors import UserError
from r3fa.provenance import code_version
from r3fa.loaders import create_loader, dali_available
from r3fa.metrics import box_normaliser, nme
from r3fa.morphable import MorphableModel, load_model, posed_vertices
from r3fa.params import Whitening
from r3fa.records import DATASET_CONVENTION
from r3fa.shard_contract import load_manifest
from r3fa.stderr_log import log_to_stderr
from r3fa.sync_batchnorm import convert_sync_batchnorm, count_sync_batchnorm
from r3fa.train_config import TrainConfig

EpochCallback = Callable[[dict[str, Any]], None]
log = logging.getLogger("r3fa.training")


# ----------------------------------------------------------------------------- run context
@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) DDP job, from torchrun's environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "DistContext":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def resolve_device(spec: str, ctx: DistContext) -> torch.device:
    """`"auto"`: this process's GPU (`cuda:LOCAL_RANK`) when CUDA is available, else the CPU."""
    if spec == "auto":
        return torch.device(f"cuda:{ctx.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(spec)


@dataclass(frozen=True)
class DatasetInfo:
    """What training needs from a shard set's `manifest.json`."""

    whitening: Whitening
    manifest_hash: str  # see `read_dataset_info`
    convention: CropConvention = DATASET_CONVENTION


def read_dataset_info(shard_dir: str | Path) -> DatasetInfo:
    """Whitening statistics, manifest hash (`ShardSetManifest.identity`: the data, not the code version) and
    crop convention of a shard set.

    Raises:
        UserError: `shard_dir` holds no readable `manifest.json` (`r3fa.shard_contract.load_manifest`).
    """
    manifest = load_manifest(shard_dir)
    return DatasetInfo(manifest.whitening.to_whitening(), manifest.identity(), manifest.crop_convention)


# ----------------------------------------------------------------------------- factories
def build_model(cfg: TrainConfig, device: torch.device, ctx: DistContext = DistContext()) -> nn.Module:
    """The registry model of `cfg.model`, on `device` (channels-last when configured), its BatchNorm layers
    synchronised over the global batch when `ctx` has more than one process and `cfg.sync_batchnorm`.

    Raises:
        UserError: an unknown model name, or constructor arguments the model does not take.
    """
    try:
        model = models.create(cfg.model.name, **cfg.model.kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"model {cfg.model.name!r} with kwargs {cfg.model.kwargs}: {err}") from None
    if ctx.distributed and cfg.sync_batchnorm:
        convert_sync_batchnorm(model)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Step schedule, stepped once per epoch: lr x gamma after each milestone epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.optim.milestones, gamma=cfg.optim.gamma)


def build_loss(cfg: TrainConfig, info: DatasetInfo, generator: torch.Generator, device: torch.device) -> nn.Module:
    """The paper's loss (`cfg.loss.wpdc` x WPDC + `cfg.loss.wing` x Wing), resampling with `generator`."""
    return losses.R3FALoss(
        whitening=info.whitening,
        convention=info.convention,
        generator=generator,
        wpdc_weight=cfg.loss.wpdc,
        wing_weight=cfg.loss.wing,
    ).to(device)


def crop_landmarks(pred_whitened: torch.Tensor, info: DatasetInfo, bfm: MorphableModel) -> np.ndarray:
    """Network outputs -> `(B, 2, 68)` crop-frame landmarks of the dataset's convention (float64)."""
    params = info.whitening.unwhiten(pred_whitened.detach().float().cpu().numpy())
    return info.convention.model_to_crop(posed_vertices(bfm, params))[:, :2]


# ----------------------------------------------------------------------------- one epoch
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


class DivergenceError(UserError):
    """Training diverged: more batches with a non-finite loss or gradient than `max_nonfinite_steps` allows."""


def finite_step(loss: torch.Tensor, model: nn.Module, ctx: DistContext) -> bool:
    """Whether this step's loss and every gradient are finite, on every process (so all ranks agree)."""
    checks = [torch.isfinite(loss.detach()).all()]
    checks += [torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None]
    flag = torch.stack(checks).all().to(torch.float32).reshape(1)
    if ctx.distributed:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images = batch["image"].to(device, non_blocking=True).float()
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["params"].to(device, non_blocking=True).float()


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA (no gradient scaler needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    loader: Any,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    *,
    device: torch.device,
    amp: bool = True,
    channels_last: bool = True,
    after_step: Callable[[TrainState, int], None] | None = None,
    max_nonfinite_steps: int = 0,
    ctx: DistContext = DistContext(),
) -> None:
    """Train over `loader` (already positioned at `state.step`), updating `state` after every step.

    A batch whose loss or gradient is not finite (on any process) is skipped: the optimiser does not step,
    its loss is not summed, `state.nonfinite_steps` counts it and the loader moves on.

    Args:
        model: the (possibly DDP-wrapped) model, in train mode on return.
        loader: yields dicts with `image` (B,3,120,120) and `params` (B,62, de-whitened).
        loss_fn: `loss_fn(pred_whitened, target_params) -> scalar`.
        optimizer: stepped once per batch.
        state: advanced in place (step, global_step, loss sums).
        device: where the model lives.
        amp: bfloat16 autocast for the forward pass on CUDA.
        channels_last: feed images in channels-last memory format.
        after_step: called as `after_step(state, batch_size)` after each step (checkpointing, progress).
        max_nonfinite_steps: skipped batches allowed in the whole run (`state.nonfinite_steps`).
        ctx: the DDP context (the finiteness check is agreed across processes).

    Raises:
        DivergenceError: the run skipped more than `max_nonfinite_steps` batches.
    """
    model.train()
    for batch in loader:
        images, target = _to_device(batch, device, channels_last)
        with _autocast(device, amp):
            pred = model(images)
        loss = loss_fn(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if finite_step(loss, model, ctx):
            optimizer.step()
            state.loss_sum += float(loss.detach()) * images.shape[0]
            state.samples += images.shape[0]
        else:
            optimizer.zero_grad(set_to_none=True)
            state.nonfinite_steps += 1
            if state.nonfinite_steps > max_nonfinite_steps:
                raise DivergenceError(
                    f"training diverged at epoch {state.epoch} step {state.step}: loss {float(loss.detach())} or "
                    f"a gradient is not finite ({state.nonfinite_steps} such batch(es), max_nonfinite_steps "
                    f"{max_nonfinite_steps}); lower optim.lr, and start afresh (no model was written)"
                )
        state.step += 1
        state.global_step += 1
        if after_step is not None:
            after_step(state, images.shape[0])


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Any,
    loss_fn: nn.Module,
    info: DatasetInfo,
    bfm: MorphableModel,
    *,
    device: torch.device,
    ctx: DistContext = DistContext(),
    amp: bool = True,
    channels_last: bool = True,
) -> dict[str, float]:
    """Loss and landmark NME (crop frame, percent; `r3fa.metrics.nme` over the ground truth's box) over the
    held-out split, summed over all ranks.

    Args:
        model: the (possibly DDP-wrapped) model; left in eval mode.
        loader: this rank's share of the split (batches may be empty).
        loss_fn: the training loss, with a generator reseeded by the caller (the same draws every time).
        info: the dataset's whitening and crop convention (to decode the outputs).
        bfm: the 68-landmark morphable model.
        device: where the model lives.
        ctx: the DDP context (sums are all-reduced across ranks).
        amp: bfloat16 autocast on CUDA.
        channels_last: feed images channels-last.

    Returns:
        {"val_loss", "val_nme", "val_samples"}; NaN losses when the split is empty.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, nme sum, samples
    for batch in loader:
        n = len(batch["keys"])
        if n == 0:  # a rank's last validation batch can be empty (the loader never pads)
            continue
        images, target = _to_device(batch, device, channels_last)
        with _autocast(device, amp):
            pred = model(images).float()
        truth = batch["landmarks"].cpu().numpy().reshape(n, 2, -1)
        sums[0] += float(loss_fn(pred, target)) * n
        sums[1] += float(nme(crop_landmarks(pred, info, bfm), truth, box_normaliser(truth)).sum())
        sums[2] += n
    if ctx.distributed:
        torch.distributed.all_reduce(sums)
    loss_sum, nme_sum, count = sums.tolist()
    if count == 0:
        return {"val_loss": math.nan, "val_nme": math.nan, "val_samples": 0}
    return {"val_loss": loss_sum / count, "val_nme": 100.0 * nme_sum / count, "val_samples": int(count)}


# ----------------------------------------------------------------------------- checkpoints and logs
@dataclass(frozen=True)
class FitResult:
    """What a finished run produced."""

    out_dir: Path
    model_path: Path  # final model checkpoint (load with r3fa.predictor.load_predictor)
    metrics_path: Path  # metrics.csv
    history: list[dict[str, Any]]
    resumed_from: dict[str, int] | None  # {"epoch", "step"} when the run continued from a checkpoint


METRIC_COLUMNS = (
    "epoch", "global_step", "lr", "train_loss", "val_loss", "val_nme", "val_samples", "images_per_s", "epoch_seconds",
)  # fmt: skip


def write_metrics(history: list[dict[str, Any]], path: Path) -> Path:
    """Write the per-epoch history as CSV (atomically; the whole file each time, so resume never duplicates)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return write_text_atomic(path, text.getvalue())


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


def resolve_loader_kind(kind: str) -> str:
    """The loader `create_loader` builds for `kind`: `auto` is DALI where it imports, else the PyTorch one."""
    return "dali" if kind == "dali" or (kind == "auto" and dali_available()) else "torch"


# How an epoch's order and its partition are computed (`r3fa.loaders.order`); bump it when that changes, so that
# a checkpoint of the old order is refused instead of continued on a different one.
ORDER_ALGORITHM = "r3fa-canonical-order-v1"
# Config fields a resumed run may change: how batches are produced, not which samples, labels or jitter.
_RESUMABLE_CHANGES = {"loader": ("kind", "num_threads")}


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


class _Run:
    """The mutable pieces of one `fit` call, and how they go into and come out of a checkpoint."""

    def __init__(
        self, cfg: TrainConfig, info: DatasetInfo, model: nn.Module, device: torch.device, ddp: dict[str, Any],
        run_id: str | None = None,
    ) -> None:  # fmt: skip
        self.cfg, self.info, self.model, self.device = cfg, info, model, device
        self.ddp, self.run_id = ddp, run_id  # ddp: {"world_size", "loader_kind", "sync_batchnorm_layers"}
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_scheduler(cfg, self.optimizer)
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
            epoch_sums: the current epoch's (loss sum, samples) over all processes (`_global_sums`); None: this
                process's own (one process, or at an epoch boundary where both are zero).
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


def _written_by(checkpoint: Path, run_id: str | None) -> bool:
    """Whether the training checkpoint `checkpoint` was written under `run_id` (False for None or a bad file)."""
    if run_id is None:
        return False
    try:
        state = load_checkpoint(checkpoint).get("train_state")
    except (UserError, AttributeError):
        return False
    return isinstance(state, dict) and state.get("run_id") == run_id


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


# ----------------------------------------------------------------------------- progress
class _ProgressBar:
    """A rich progress bar over the steps of the run, with images/s (main process only)."""

    def __init__(self, enabled: bool, total_steps: int, done_steps: int) -> None:
        self._progress = (
            Progress(
                TextColumn("[bold]train[/] epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[ips]:>7.1f} img/s  loss {task.fields[loss]:.4f}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            if enabled
            else None
        )
        self._total, self._done = total_steps, done_steps

    @contextlib.contextmanager
    def running(self) -> Iterator["_ProgressBar"]:
        if self._progress is None:
            yield self
            return
        with self._progress:
            self._task = self._progress.add_task(
                "train", total=self._total, completed=self._done, epoch=0, ips=0.0, loss=math.nan
            )
            yield self

    def update(self, epoch: int, images_per_s: float, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, epoch=epoch, ips=images_per_s, loss=loss)


def epoch_line(record: dict[str, Any], epochs: int, eta_s: float) -> str:
    """The log line of a finished epoch: `key=value` fields, `epoch` counted from 1 out of `epochs`."""
    return (
        f"train epoch={record['epoch'] + 1}/{epochs} step={record['global_step']} lr={record['lr']:.3g} "
        f"train_loss={record['train_loss']:.5f} val_loss={record['val_loss']:.5f} val_nme={record['val_nme']:.3f} "
        f"img_per_s={record['images_per_s']:.1f} epoch_s={record['epoch_seconds']:.1f} eta_s={eta_s:.0f}"
    )


def summary_line(result: "FitResult", seconds: float) -> str:
    """The log line at the end of a run: epochs, last epoch's validation NME and loss, wall time, model file."""
    last = result.history[-1] if result.history else {}
    return (
        f"train done epochs={len(result.history)} val_nme={last.get('val_nme', math.nan):.3f} "
        f"train_loss={last.get('train_loss', math.nan):.5f} seconds={seconds:.1f} model={result.model_path}"
    )


# ----------------------------------------------------------------------------- the run
def fit(
    cfg: TrainConfig,
    shard_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    init_from: str | Path | None = None,
    run_id: str | None = None,
) -> FitResult:
    """Train `cfg` on the shard set in `shard_dir`, writing checkpoints and logs to `out_dir`.

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes files. A checkpoint of another
    world size or loader kind is continued exactly (module docstring); `$R3FA_TRAIN_BATCH_LOG` records the
    keys every process trains on (`batch_log`).

    Args:
        cfg: the validated training config.
        shard_dir: a shard set (manifest.json, train and val splits).
        out_dir: where the run's files go; a `checkpoints/last.pth` there is resumed from when `resume`.
        resume: continue from `out_dir/checkpoints/last.pth` if it exists (else start fresh). When False, a
            previous run's files are moved aside (`set_aside_previous_run`) and the run starts afresh, unless
            `last.pth` was written under this same `run_id` (an earlier attempt of this run: continued).
        progress: show a rich progress bar (rank 0).
        on_epoch_end: called on rank 0 with each finished epoch's metrics record.
        init_from: a checkpoint of the same architecture whose weights start a fresh run (warm start);
            ignored when the run resumes.
        run_id: who this run is (e.g. a Prefect task-run id, the same for every retry); recorded in the
            checkpoints.

    Returns:
        The paths of the final model and the metrics log, and the per-epoch history.

    Raises:
        UserError: a bad argument (no shard set, `out_dir` a file, a checkpoint that cannot resume this run).
        DivergenceError: more non-finite batches than `cfg.max_nonfinite_steps` (nothing more is written).
    """
    ctx = DistContext.from_env()
    device = resolve_device(cfg.device, ctx)
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world_size {ctx.world_size}")
    if ctx.distributed and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)

    out_dir, shard_dir = Path(out_dir), Path(shard_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: the run directory is a file; pass a folder (created if missing) as --out")
    ckpt_dir = out_dir / "checkpoints"
    last_path = ckpt_dir / "last.pth"
    info = read_dataset_info(shard_dir)
    model = build_model(cfg, device, ctx)
    ddp = {
        "world_size": ctx.world_size,
        "loader_kind": resolve_loader_kind(cfg.loader.kind),
        "sync_batchnorm_layers": count_sync_batchnorm(model),
    }
    run = _Run(cfg, info, model, device, ddp, run_id)
    resumed_from = None
    if last_path.exists() and (resume or _written_by(last_path, run_id)):
        run.restore(load_checkpoint(last_path), last_path, ctx.rank)
        resumed_from = {"epoch": run.state.epoch, "step": run.state.step}
    elif init_from is not None:
        run.warm_start(load_checkpoint(init_from))
    if ctx.distributed:
        torch.distributed.barrier()  # every rank has read last.pth before rank 0 may move it aside
    if ctx.is_main:
        if resumed_from is None:
            set_aside_previous_run(out_dir)
        write_resolved(cfg, out_dir)

    net: nn.Module = run.model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    train_loss = build_loss(cfg, info, run.generator, device)
    val_generator = torch.Generator()
    val_loss = build_loss(cfg, info, val_generator, device)
    bfm = load_model("bfm68")

    def loader(split: str, epoch: int, start_sample: int, train: bool) -> Any:
        return create_loader(
            shard_dir,
            split,
            cfg.batch_size // ctx.world_size,
            kind=ddp["loader_kind"],
            seed=cfg.seed,
            epoch=epoch,
            start_sample=start_sample,
            rank=ctx.rank,
            world_size=ctx.world_size,
            device=device,
            augment=cfg.loader.augment and train,
            num_threads=cfg.loader.num_threads,
            drop_last=train,
            shuffle=cfg.loader.shuffle if train else "global",
            sampling=cfg.loader.sampling if train else "uniform",
        )

    steps_per_epoch = len(loader("train", 0, 0, True))
    if steps_per_epoch == 0:
        raise ValueError(f"{shard_dir}: the train split has fewer than one batch of {cfg.batch_size} samples")
    state = run.state
    bar = _ProgressBar(progress and ctx.is_main, cfg.epochs * steps_per_epoch, state.global_step)
    clock = {"t0": time.perf_counter(), "images": 0}
    run_t0, epochs_at_start = time.perf_counter(), state.epoch

    def after_step(s: TrainState, batch: int) -> None:
        clock["images"] += batch * ctx.world_size
        rate = clock["images"] / max(time.perf_counter() - clock["t0"], 1e-9)
        bar.update(s.epoch + 1, rate, s.loss_sum / max(s.samples, 1))  # counted from 1, as in the log lines
        if s.global_step % cfg.checkpoint_every_steps == 0 and s.step < steps_per_epoch:
            sums = _global_sums(s.loss_sum, s.samples, ctx, device)  # every rank takes part
            if ctx.is_main:
                save_checkpoint(run.training_checkpoint(sums), last_path)

    with bar.running():
        while state.epoch < cfg.epochs:
            clock.update(t0=time.perf_counter(), images=0)
            lr = run.optimizer.param_groups[0]["lr"]
            train_one_epoch(
                net,
                batch_log(loader("train", state.epoch, state.step * cfg.batch_size, True), state, ctx),
                train_loss,
                run.optimizer,
                state,
                device=device,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                after_step=after_step,
                max_nonfinite_steps=cfg.max_nonfinite_steps,
                ctx=ctx,
            )
            seconds = time.perf_counter() - clock["t0"]
            val_generator.manual_seed(cfg.seed)  # the same vertex draws at every validation
            metrics = validate(
                net,
                loader(cfg.val_split, 0, 0, False),
                val_loss,
                info,
                bfm,
                device=device,
                ctx=ctx,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
            )
            record = {
                "epoch": state.epoch,
                "global_step": state.global_step,
                "lr": lr,
                "train_loss": _global_mean(state.loss_sum, state.samples, ctx, device),
                **metrics,
                "images_per_s": clock["images"] / max(seconds, 1e-9),
                "epoch_seconds": seconds,
            }
            state.history.append(record)
            run.scheduler.step()
            state.epoch, state.step, state.loss_sum, state.samples = state.epoch + 1, 0, 0.0, 0
            if ctx.is_main:
                if cfg.keep_epoch_checkpoints:
                    save_checkpoint(run.model_checkpoint(), ckpt_dir / f"epoch_{record['epoch']:03d}.pth")
                save_checkpoint(run.training_checkpoint(), last_path)
                write_metrics(state.history, out_dir / "metrics.csv")
                per_epoch = (time.perf_counter() - run_t0) / (state.epoch - epochs_at_start)
                log.info(epoch_line(record, cfg.epochs, per_epoch * (cfg.epochs - state.epoch)))
                if on_epoch_end is not None:
                    on_epoch_end(record)

    model_path = out_dir / "model.pth"
    if ctx.is_main:
        save_checkpoint(run.model_checkpoint(), model_path)
    if ctx.distributed:
        torch.distributed.barrier()
    result = FitResult(out_dir, model_path, out_dir / "metrics.csv", state.history, resumed_from)
    if ctx.is_main:
        log.info(summary_line(result, time.perf_counter() - run_t0))
    return result


def _global_sums(total: float, count: int, ctx: DistContext, device: torch.device) -> tuple[float, int]:
    """(sum, count) over all processes (every process must call it)."""
    sums = torch.tensor([total, count], dtype=torch.float64, device=device)
    if ctx.distributed:
        torch.distributed.all_reduce(sums)
    return float(sums[0]), int(sums[1])


def _global_mean(total: float, count: int, ctx: DistContext, device: torch.device) -> float:
    total, count = _global_sums(total, count, ctx, device)
    return total / count if count > 0 else math.nan


BATCH_LOG_ENV = "R3FA_TRAIN_BATCH_LOG"


def batch_log(loader: Any, state: TrainState, ctx: DistContext) -> Any:
    """`loader`, recording each training batch's keys when `$R3FA_TRAIN_BATCH_LOG` names a folder (else as is).

    A debugging and testing aid: each process appends one JSON line per batch, before the step runs, to
    `<folder>/rank<R>.jsonl`: {"epoch", "step", "rank", "world_size", "positions", "keys"} (positions: places in
    the epoch's canonical order). A run killed after the line was written may not have taken that step; the
    checkpoint's (epoch, step) says which steps count.
    """
    folder = os.environ.get(BATCH_LOG_ENV)
    if not folder:
        return loader
    path = Path(folder) / f"rank{ctx.rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)

    def logged() -> Iterator[dict[str, Any]]:
        with path.open("a") as fh:
            for batch in loader:
                where = {"epoch": state.epoch, "step": state.step, "rank": ctx.rank, "world_size": ctx.world_size}
                fh.write(json.dumps({**where, "positions": batch["positions"], "keys": batch["keys"]}) + "\n")
                fh.flush()
                yield batch

    return logged()


# ----------------------------------------------------------------------------- command line (torchrun)
def train_from_files(config: Path, shards: Path, out: Path, *, fresh: bool = False, progress: bool = True) -> FitResult:
    """What `python -m r3fa.training` and `r3fa train` run: load the config, `fit`, close the process group.

    Raises:
        UserError: a config, shard set, run folder or checkpoint the run cannot use, or a diverged run.
    """
    cfg = load_config(config, TrainConfig)
    log_to_stderr("r3fa.training")
    try:
        return fit(cfg, shards, out, resume=not fresh, progress=progress)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def fit_summary(result: FitResult) -> dict[str, Any]:
    """The JSON line the command prints: where the model and the log are, and the last epoch's metrics."""
    return {
        "model_path": str(result.model_path),
        "metrics_path": str(result.metrics_path),
        "out_dir": str(result.out_dir),
        "resumed_from": result.resumed_from,
        "final": result.history[-1] if result.history else None,
    }


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`prog: error: ...`) and exit code 2, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> FitResult:
    """Command-line entry: `python -m r3fa.training` or `torchrun --nproc-per-node N -m r3fa.training`.

    A caller's mistake (`UserError`: bad config, missing shard set, a checkpoint that cannot resume, a
    diverged run) is one line on stderr and exit code 2; rank 0 prints `fit_summary` as JSON on success.
    """
    parser = _OneLineParser(prog="python -m r3fa.training", description=main.__doc__)
    parser.add_argument("--config", required=True, type=Path, help="configs/train/*.yaml")
    parser.add_argument("--shards", required=True, type=Path, help="shard set (with manifest.json)")
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument("--fresh", action="store_true", help="move an earlier run in --out aside and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = train_from_files(args.config, args.shards, args.out, fresh=args.fresh, progress=not args.no_progress)
    except UserError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    if DistContext.from_env().is_main:
        print(json.dumps(fit_summary(result)))
    return result


if __name__ == "__main__":
    main()
