"""Training loaders over a shard set: one factory, two implementations (DALI, and a PyTorch fallback).

`create_loader` is the only entry point: the training config names a loader kind (`auto`, `dali`, `torch`)
and the code never branches on it elsewhere. A loader is one rank's view of one epoch: iterating it yields
the batches from `start_step` to the end of the epoch, and `len(loader)` is the number of steps of a whole
epoch, the same on every rank. How ranks, seeds and steps are decided: `r3fa.loaders.shardset`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from r3fa.loaders.shardset import plan_epoch, read_shards

LoaderKind = Literal["auto", "dali", "torch"]


class Loader(Protocol):
    """Iterates dicts: `image` float32 (B,3,120,120) BGR normalised (x - 127.5) / 128, `params` float32 (B,62),
    `landmarks` float32 (B,136), `keys` list[str]; `len()` = steps per epoch."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


def dali_available() -> bool:
    """Whether `nvidia.dali` imports here (installed is not enough: its shared libraries must load too)."""
    try:
        importlib.import_module("nvidia.dali")
    except (ImportError, OSError):
        return False
    return True


def create_loader(
    shard_dir: Path,
    split: str,
    batch_size: int,
    *,
    kind: LoaderKind = "auto",
    seed: int = 0,
    epoch: int = 0,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    augment: bool = False,
    num_threads: int = 2,
    drop_last: bool = True,
) -> Loader:
    """A loader for one rank's share of one epoch of `split`.

    Args:
        shard_dir: a shard set written by `pipelines.build.build_shards` (needs `manifest.json`).
        split: "train" or "val".
        batch_size: samples per batch on this rank.
        kind: "dali", "torch", or "auto" (DALI if importable, else the PyTorch fallback).
        seed: run seed; with `epoch` it fixes the order and the augmentations.
        epoch: which epoch.
        start_step: first step to yield; the batches are exactly those of an uninterrupted epoch from there on.
        rank: this process's rank (DALI `shard_id`).
        world_size: number of ranks (DALI `num_shards`); every rank gets the full shard list.
        device: where batches land; "cuda[:i]" also makes DALI decode on that GPU.
        augment: apply the label-safe photometric augmentations (colour jitter, blur, noise).
        num_threads: DALI CPU threads, or DataLoader workers for the fallback (0: decode in this process).
        drop_last: drop each rank's incomplete tail (training); without it every sample is yielded exactly once
            and the last batch may be partial, or empty on a rank with one sample fewer (validation).

    Returns:
        A `Loader`.

    Raises:
        ValueError: an unknown kind, or bad rank / batch size.
        ImportError: kind="dali" where DALI is not installed.
    """
    if kind not in ("auto", "dali", "torch"):
        raise ValueError(f"unknown loader kind {kind!r}: expected auto, dali or torch")
    device = torch.device(device)
    plan = plan_epoch(
        read_shards(shard_dir, split),
        batch_size=batch_size,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    if kind == "dali" or (kind == "auto" and dali_available()):
        from r3fa.loaders.dali import DaliLoader

        return DaliLoader(
            plan,
            start_step=start_step,
            rank=rank,
            world_size=world_size,
            device=device,
            augment=augment,
            num_threads=num_threads,
            drop_last=drop_last,
        )
    from r3fa.loaders.torch_loader import TorchLoader

    return TorchLoader(plan, start_step=start_step, device=device, augment=augment, num_workers=num_threads)
