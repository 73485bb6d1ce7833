"""The canonical sample order of an epoch, and how ranks take their part of it.

Why this exists: a run must be able to stop at any step and resume on another number of processes or with the
other loader, and see exactly the samples of the epoch it had not yet seen. That is only possible if the order
of an epoch does not depend on who reads it. So the order is a pure function of (seed, epoch, shard sizes) over
the *global* sample index (shards in manifest order, samples in tar order), computed once per epoch by every
rank, and a run's progress inside an epoch is one number: the global samples consumed so far (`start_sample`).

Partition (in the manner of MosaicML Streaming's order-then-partition): from `start_sample` on, the order is
cut into global batches of `batch_size * world_size` positions; inside global batch `[a, b)` rank `r` takes the
contiguous positions `[a + floor(r (b - a) / W), a + floor((r + 1) (b - a) / W))`. A full global batch gives
every rank exactly `batch_size`; a partial last one (only without `drop_last`) is split as evenly as possible.
Concatenating the ranks' batches of a step in rank order gives the canonical order back, whatever the world size.

Tail: with `drop_last` the last `(N - start_sample) mod (batch_size * world_size)` positions of the epoch are not
served (training: every step is a full global batch). With the same global batch size, a resumed run drops
exactly the tail an uninterrupted run would have dropped.

Shuffles (`SHUFFLES`):
- `global`: a uniform random permutation of all N samples every epoch (the default; reads are random access
  through the shards' `.idx` offsets, so nothing is gained by keeping shard neighbours together);
- `py1br`: MosaicML's "py1br" idea, for storage where locality matters: shards permuted, their samples
  concatenated, cut into blocks of random size in [0.75, 1.25] x `block_size` and each block shuffled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BLOCK_SIZE = 1 << 18


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(stream)]))


def shuffle_global(sizes: Sequence[int], seed: int, epoch: int, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """A uniform random permutation of every sample index (`block_size` is unused)."""
    return _rng(seed, epoch, 0).permutation(int(sum(sizes)))


def shuffle_py1br(sizes: Sequence[int], seed: int, epoch: int, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Shards permuted, then blocks of random size (0.75-1.25 x `block_size`) each shuffled in place."""
    rng = _rng(seed, epoch, 1)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    order = np.concatenate(
        [np.arange(starts[s], starts[s] + sizes[s], dtype=np.int64) for s in rng.permutation(len(sizes))]
        or [np.zeros(0, np.int64)]
    )
    low, high = max(1, int(block_size * 0.75)), max(1, int(block_size * 1.25))
    begin = 0
    while begin < len(order):
        end = begin + int(rng.integers(low, high + 1))
        rng.shuffle(order[begin:end])
        begin = end
    return order


SHUFFLES: dict[str, Callable[..., np.ndarray]] = {"global": shuffle_global, "py1br": shuffle_py1br}


def epoch_order(
    sizes: Sequence[int], seed: int, epoch: int, shuffle: str = "global", block_size: int = DEFAULT_BLOCK_SIZE
) -> np.ndarray:
    """The canonical order of epoch `epoch`: global sample indices (int64, a permutation of range(sum(sizes))).

    Args:
        sizes: samples per shard, in manifest order (global index = shard offset + position in the tar).
        seed: run seed.
        epoch: epoch number.
        shuffle: a name in `SHUFFLES`.
        block_size: block size of `py1br`.

    Raises:
        ValueError: an unknown shuffle name.
    """
    if shuffle not in SHUFFLES:
        raise ValueError(f"unknown shuffle {shuffle!r}: expected one of {sorted(SHUFFLES)}")
    return SHUFFLES[shuffle](sizes, seed, epoch, block_size)


@dataclass(frozen=True)
class RankSlice:
    """Which positions of the canonical order one rank reads, from `start_sample` to the end of the epoch.

    Attributes:
        total: samples in the epoch (N).
        start_sample: global positions already consumed this epoch.
        batch_size: samples per rank per full step.
        rank: this rank.
        world_size: number of ranks.
        drop_last: serve only full global batches.
    """

    total: int
    start_sample: int
    batch_size: int
    rank: int
    world_size: int
    drop_last: bool

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside [0, {self.world_size})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 <= self.start_sample <= self.total:
            raise ValueError(f"start_sample {self.start_sample} is outside [0, {self.total}]")

    @property
    def global_batch(self) -> int:
        """Positions consumed by one step of all ranks together."""
        return self.batch_size * self.world_size

    @property
    def steps(self) -> int:
        """Steps left in the epoch, the same on every rank."""
        left = self.total - self.start_sample
        return left // self.global_batch if self.drop_last else -(-left // self.global_batch)

    def positions(self, step: int) -> tuple[int, int]:
        """Positions [begin, end) of the canonical order that this rank reads at `step` (0 = first step served)."""
        a = self.start_sample + step * self.global_batch
        n = min(self.global_batch, self.total - a)
        return a + self.rank * n // self.world_size, a + (self.rank + 1) * n // self.world_size

    def consumed_after(self, steps: int) -> int:
        """Global positions consumed once `steps` more steps have run: the `start_sample` to resume from."""
        return min(self.total, self.start_sample + steps * self.global_batch)
