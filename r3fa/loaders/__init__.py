"""Training loaders over a shard set: one factory, two implementations (DALI, and a PyTorch fallback).

`create_loader` is the only entry point: the training config names a loader kind (`auto`, `dali`, `torch`)
and the code never branches on it elsewhere. A loader is one rank's view of one epoch from a point on: iterating it
yields the batches of the epoch's canonical order (`r3fa.loaders.order`) from `start_sample` to the end, and
`len(loader)` is that number of batches, the same on every rank. What a rank reads: `r3fa.loaders.shardset`.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from r3fa.loaders.jitter import OnlineJitter
from r3fa.loaders.shardset import plan_epoch, read_shards
from r3fa.sampling import pose_balanced_order, split_yaw_bins

LoaderKind = Literal["auto", "dali", "torch"]


class Loader(Protocol):
    """Iterates dicts: `image` float32 (B,3,120,120) BGR normalised (x - 127.5) / 128, `params` float32 (B,62),
    `landmarks` float32 (B,136), `keys` list[str], `positions` list[int] (places in the epoch's canonical order);
    `len()` = batches yielded."""

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
    start_sample: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
    augment: bool | OnlineJitter = False,
    num_threads: int = 2,
    drop_last: bool = True,
    shuffle: str = "global",
    sampling: Literal["uniform", "pose_balanced"] = "uniform",
) -> Loader:
    """A loader for one rank's share of one epoch of `split`, from a point of the epoch's canonical order on.

    Args:
        shard_dir: a shard set written by `pipelines.build.build_shards` (needs `manifest.json`).
        split: "train" or "val".
        batch_size: samples per batch on this rank (a step consumes `batch_size * world_size` samples).
        kind: "dali", "torch", or "auto" (DALI if importable, else the PyTorch fallback). Both give the same
            batches (same keys, labels, jitter; pixels within the JPEG decoders' tolerance).
        seed: run seed; with `epoch` it fixes the order and the online jitter.
        epoch: which epoch.
        start_sample: global samples of this epoch already consumed (by any world size or loader kind): the
            loader serves the canonical order from there on. Elastic, exact resume: training passes
            `steps done x global batch size`.
        rank: this process's rank.
        world_size: number of ranks.
        device: where batches land; "cuda[:i]" also makes DALI decode on that GPU.
        augment: the online jitter (`r3fa.loaders.jitter`): True for the default `OnlineJitter()`, or a spec.
        num_threads: DALI CPU threads, or DataLoader workers for the fallback (0: decode in this process).
        drop_last: serve only full global batches (training; the epoch's tail is dropped); without it every
            sample from `start_sample` on is served exactly once, the last batch partial or empty (validation).
        shuffle: the epoch order's shuffle (`r3fa.loaders.order.SHUFFLES`).
        sampling: "uniform" (every sample once per epoch, in the `shuffle` order) or "pose_balanced" (the epoch's
            order drawn with replacement so that every |yaw| bin is seen equally often: `r3fa.sampling`).

    Returns:
        A `Loader`; `len()` is the number of batches it yields.

    Raises:
        ValueError: an unknown kind or shuffle, or a bad rank, batch size or start.
        UserError: no readable manifest, or a listed shard that is missing.
        ImportError: kind="dali" where DALI is not installed.
    """
    if kind not in ("auto", "dali", "torch"):
        raise ValueError(f"unknown loader kind {kind!r}: expected auto, dali or torch")
    device = torch.device(device)
    jitter = OnlineJitter() if augment is True else augment or None
    shards = read_shards(shard_dir, split)
    plan = plan_epoch(
        shards,
        batch_size=batch_size,
        seed=seed,
        epoch=epoch,
        start_sample=start_sample,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        shuffle=shuffle,
    )
    if sampling == "pose_balanced":
        plan = replace(plan, order=pose_balanced_order(split_yaw_bins(shard_dir, split), seed, epoch))
    elif sampling != "uniform":
        raise ValueError(f"unknown sampling {sampling!r}: expected uniform or pose_balanced")
    if kind == "dali" or (kind == "auto" and dali_available()):
        from r3fa.loaders.dali import DaliLoader

        return DaliLoader(plan, device, jitter, num_threads=num_threads)
    from r3fa.loaders.torch_loader import TorchLoader

    return TorchLoader(plan, device, jitter, num_workers=num_threads)
