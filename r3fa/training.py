"""The training engine: plain functions that train a registry model on a shard set, with resume and DDP.

Laid out like torchvision's reference script: `build_*` factories, `train_one_epoch`, `validate`, and
`fit`, which wires them together with checkpointing; `main` is the command-line entry that `torchrun`
starts (`torchrun --nproc-per-node N -m r3fa.training --config ... --shards ... --out ...`). Nothing here
knows about Prefect: `flows/train.py` calls `fit` and publishes what it returns. Around the engine, each in a
module of its own: the DDP context and collectives (`r3fa.distributed`), what a shard set tells training
(`r3fa.dataset_info`), what a checkpoint holds and when it may continue a run (`r3fa.train_resume`: resume is
exact, elastic, or refused), and the progress bar, log lines, `metrics.csv` and batch log (`r3fa.train_report`).

Why it looks the way it does:
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

Outputs of `fit` in `out_dir`: `config.resolved.yaml`, `metrics.csv` (one row per epoch),
`checkpoints/last.pth` (rolling, for resume), `checkpoints/epoch_NNN.pth` and the final `model.pth`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from r3fa import losses, models
from r3fa.checkpoint import load_checkpoint, save_checkpoint
from r3fa.config import load_config, write_resolved
from r3fa.dataset_info import DatasetInfo, read_dataset_info
from r3fa.distributed import DistContext, global_mean, global_sums, join_process_group, resolve_device
from r3fa.errors import UserError
from r3fa.loaders import create_loader, dali_available
from r3fa.metrics import box_normaliser, nme
from r3fa.morphable import MorphableModel, load_model, posed_vertices
from r3fa.stderr_log import log_to_stderr
from r3fa.sync_batchnorm import convert_sync_batchnorm, count_sync_batchnorm
from r3fa.train_config import TrainConfig
from r3fa.train_report import ProgressBar, batch_log, epoch_line, summary_line, write_metrics
from r3fa.train_resume import ResumableRun, TrainLock, TrainState, set_aside_previous_run, written_by

EpochCallback = Callable[[dict[str, Any]], None]
log = logging.getLogger("r3fa.training")


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
    """Adam over `model`'s parameters, with the config's learning rate and weight decay."""
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


# ----------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class FitResult:
    """What a finished run produced."""

    out_dir: Path
    model_path: Path  # final model checkpoint (load with r3fa.predictor.load_predictor)
    metrics_path: Path  # metrics.csv
    history: list[dict[str, Any]]
    resumed_from: dict[str, int] | None  # {"epoch", "step"} when the run continued from a checkpoint


def resolve_loader_kind(kind: str) -> str:
    """The loader `create_loader` builds for `kind`: `auto` is DALI where it imports, else the PyTorch one."""
    return "dali" if kind == "dali" or (kind == "auto" and dali_available()) else "torch"


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
    world size or loader kind is continued exactly (`r3fa.train_resume`); `$R3FA_TRAIN_BATCH_LOG` records the
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
        UserError: a bad argument (no shard set, `out_dir` a file, a checkpoint that cannot resume this run), or
            another run holds `out_dir` (`r3fa.train_resume.TrainLock`).
        DivergenceError: more non-finite batches than `cfg.max_nonfinite_steps` (nothing more is written).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: the run directory is a file; pass a folder (created if missing) as --out")
    options = dict(resume=resume, progress=progress, on_epoch_end=on_epoch_end, init_from=init_from, run_id=run_id)
    if not DistContext.from_env().is_main:
        return _fit_held(cfg, shard_dir, out_dir, **options)
    out_dir.mkdir(parents=True, exist_ok=True)
    with TrainLock(out_dir):
        return _fit_held(cfg, shard_dir, out_dir, **options)


def _fit_held(
    cfg: TrainConfig,
    shard_dir: str | Path,
    out_dir: Path,
    *,
    resume: bool,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    init_from: str | Path | None,
    run_id: str | None,
) -> FitResult:
    """`fit` once rank 0 holds the run folder."""
    ctx = DistContext.from_env()
    device = resolve_device(cfg.device, ctx)
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world_size {ctx.world_size}")
    join_process_group(ctx, device)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(cfg.seed)

    shard_dir = Path(shard_dir)
    ckpt_dir = out_dir / "checkpoints"
    last_path = ckpt_dir / "last.pth"
    info = read_dataset_info(shard_dir)
    model = build_model(cfg, device, ctx)
    ddp = {
        "world_size": ctx.world_size,
        "loader_kind": resolve_loader_kind(cfg.loader.kind),
        "sync_batchnorm_layers": count_sync_batchnorm(model),
    }
    optimizer = build_optimizer(cfg, model)
    run = ResumableRun(cfg, info, model, optimizer, build_scheduler(cfg, optimizer), device, ddp, run_id)
    resumed_from = None
    if last_path.exists() and (resume or written_by(last_path, run_id)):
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
    bar = ProgressBar(progress and ctx.is_main, cfg.epochs * steps_per_epoch, state.global_step)
    clock = {"t0": time.perf_counter(), "images": 0}
    run_t0, epochs_at_start = time.perf_counter(), state.epoch

    def after_step(s: TrainState, batch: int) -> None:
        clock["images"] += batch * ctx.world_size
        rate = clock["images"] / max(time.perf_counter() - clock["t0"], 1e-9)
        bar.update(s.epoch + 1, rate, s.loss_sum / max(s.samples, 1))  # counted from 1, as in the log lines
        if s.global_step % cfg.checkpoint_every_steps == 0 and s.step < steps_per_epoch:
            sums = global_sums(s.loss_sum, s.samples, ctx, device)  # every rank takes part
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
                "train_loss": global_mean(state.loss_sum, state.samples, ctx, device),
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
        log.info(summary_line(result.history, result.model_path, time.perf_counter() - run_t0))
    return result


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
