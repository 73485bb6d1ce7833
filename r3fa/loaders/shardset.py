"""What both training loaders agree on: which shards a split has, how an epoch is cut between ranks, and
what a batch looks like.

The DALI pipeline and the PyTorch fallback must give a rank the same samples with the same labels, so every
decision that fixes *which* samples a rank sees lives here and nowhere else:

- the shard list of a split, from `manifest.json` (sample counts included, so `len(loader)` needs no I/O);
- the shard order of an epoch, a permutation drawn from (seed, epoch): every rank draws the same one;
- each rank's part of the epoch, a contiguous range of the global sample index over the shards in that order,
  with the formula of DALI's readers (`shard_id` / `num_shards`), so that the fallback reproduces it;
- the number of steps, identical on every rank (see `steps_per_epoch`);
- the seeds of the within-rank shuffle and of the augmentations, derived from (seed, epoch, rank).

The order *inside* a rank's range is each loader's own (a shuffle buffer in both, with different generators):
both are deterministic per (seed, epoch) and both yield the same key set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE = 120
PARAMS_DIM = 62
LANDMARKS_DIM = 136
# Input normalisation of the references: BGR, (x - 127.5) / 128.
PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0
# Members of a sample, as the builder writes them (`KEY.jpg`, `KEY.params.f32`, ...).
IMAGE_EXT = "jpg"
PARAMS_EXT = "params.f32"
LANDMARKS_EXT = "lms.f32"
# Shuffle buffer of both loaders (samples): the builder shuffles globally, the buffer only varies the batches
# from one epoch to the next.
SHUFFLE_BUFFER = 1024


@dataclass(frozen=True)
class AugmentRanges:
    """Label-safe photometric augmentations (none moves a pixel, so labels stay valid).

    Each factor is drawn uniformly per sample from [1 - x, 1 + x]; blur and noise apply with their probability.
    """

    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_prob: float = 0.2
    noise_std: tuple[float, float] = (2.0, 8.0)


AUGMENT = AugmentRanges()


@dataclass(frozen=True)
class Shard:
    """One shard of a split: its tar, its DALI index and its sample count."""

    tar: Path
    index: Path
    count: int


@dataclass(frozen=True)
class EpochPlan:
    """One rank's share of one epoch.

    Attributes:
        shards: every shard of the split, in this epoch's order (every rank gets the full list).
        begin: first global sample index (over `shards` in this order) of this rank's range.
        end: one past the last.
        steps: batches every rank yields in this epoch.
        batch_size: samples per batch (per rank).
        shuffle_seed: seed of this rank's shuffle buffer.
        augment_seed: seed of this rank's augmentations.
    """

    shards: tuple[Shard, ...]
    begin: int
    end: int
    steps: int
    batch_size: int
    shuffle_seed: int
    augment_seed: int


@dataclass
class PlannedEpoch:
    """What every loader holds: one rank's epoch plan, the step to start from, where batches go, and
    whether to apply the online augmentations. Iterating yields `plan.steps - start_step` batches."""

    plan: EpochPlan
    start_step: int
    device: torch.device
    augment: bool

    def __len__(self) -> int:
        return self.plan.steps


def read_shards(shard_dir: Path, split: str) -> list[Shard]:
    """The complete shards of `split`, in the manifest's order.

    Args:
        shard_dir: a shard set written by `pipelines.build.build_shards`.
        split: "train" or "val".

    Returns:
        The shards whose manifest entry has this split (empty shards left out: DALI rejects them).

    Raises:
        FileNotFoundError: no `manifest.json`, or a listed shard without its tar, index or `.done` marker.
    """
    shard_dir = Path(shard_dir)
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    shards = []
    for entry in manifest["shards"]:
        if entry["split"] != split or entry["count"] == 0:
            continue
        tar, index = shard_dir / entry["file"], shard_dir / entry["idx"]
        for needed in (tar, index, tar.with_suffix(".done")):
            if not needed.exists():
                raise FileNotFoundError(f"{needed}: listed in {shard_dir / 'manifest.json'} but missing")
        shards.append(Shard(tar=tar, index=index, count=int(entry["count"])))
    return shards


def derive_seed(*parts: int) -> int:
    """A 31-bit seed drawn from a tuple of integers (DALI wants a non-negative int32)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def rank_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Global sample range [begin, end) of `rank`: DALI's sharding formula, floor(rank * total / world_size)."""
    return total * rank // world_size, total * (rank + 1) // world_size


def steps_per_epoch(total: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    """Steps every rank runs in an epoch of `total` samples.

    Ranks hold floor or ceil of total / world_size samples. With `drop_last`, every rank stops after the full
    batches of the smallest rank (the tail of each rank is dropped; a different tail every epoch, since the order
    changes). Without it, every rank runs as many steps as the largest rank needs; the last batch is partial and
    may be empty on a rank with one sample fewer, so that every sample is seen exactly once (what validation
    needs) and no rank waits on another (what DDP needs). DALI's iterator does the same with DROP / PARTIAL.
    """
    if drop_last:
        return (total // world_size) // batch_size
    largest = -(-total // world_size)
    return -(-largest // batch_size)


def plan_epoch(
    shards: list[Shard],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    drop_last: bool,
) -> EpochPlan:
    """Fix this rank's part of epoch `epoch`: shard order, sample range, steps and seeds.

    Raises:
        ValueError: on a rank outside [0, world_size) or a non-positive batch size.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(derive_seed(seed, epoch, 0)).permutation(len(shards))
    total = sum(s.count for s in shards)
    begin, end = rank_range(total, rank, world_size)
    return EpochPlan(
        shards=tuple(shards[i] for i in order),
        begin=begin,
        end=end,
        steps=steps_per_epoch(total, batch_size, world_size, drop_last),
        batch_size=batch_size,
        shuffle_seed=derive_seed(seed, epoch, rank, 1),
        augment_seed=derive_seed(seed, epoch, rank, 2),
    )


def key_from_member(name: str) -> str:
    """The sample key of a tar member name or a DALI source_info (`archive.tar:offset:KEY.jpg`).

    Keys have no dots, so the key is what precedes the first dot of the last `:`-separated field.
    """
    return name.rsplit(":", 1)[-1].rsplit("/", 1)[-1].split(".", 1)[0]


def empty_batch(device: torch.device | str = "cpu") -> dict[str, object]:
    """A batch of zero samples, for the last step of a rank whose range ran out one step early."""
    return {
        "image": torch.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.float32, device=device),
        "params": torch.zeros((0, PARAMS_DIM), dtype=torch.float32, device=device),
        "landmarks": torch.zeros((0, LANDMARKS_DIM), dtype=torch.float32, device=device),
        "keys": [],
    }
