"""How well does each epoch reshuffle? Shuffle-quality figures at the paper's shard geometry (issue 12).

For consecutive epochs e, e+1 of a sample order, two figures:
- co-batch rate: of the sample pairs that shared a batch in epoch e, the fraction that share one in epoch e+1
  (per-rank batches of `--batch` and global batches of `--batch` x `--ranks`); an ideal shuffle gives about
  (b - 1) / (N - 1) for batches of b;
- Spearman rank correlation of the samples' positions in e and e+1 (positions are ranks already; samples that a
  `drop_last` tail left out of either epoch are not counted); an ideal shuffle gives about 0 +- 1 / sqrt(N).

Orders compared:
- `ideal`: an independent uniform random permutation per epoch;
- `buffer (before)`: the loaders before the canonical order, exactly as the PyTorch fallback did it: shard order
  permuted per epoch, each rank a contiguous range of the global index over the shards in that order, a
  1,024-sample shuffle buffer (Python's `random.Random`) inside each rank's range, per-rank batches cut in sequence
  (DALI's reader did the same with its own buffer generator);
- `canonical global` and `canonical py1br`: `r3fa.loaders.order.epoch_order` and the rank partition of
  `r3fa.loaders.order.RankSlice` (position p is in per-rank batch p // b and global batch p // (b x ranks)).

Example (the paper: 680k samples, ~21k per 256 MB shard, 8 ranks of batch 128):
    .venv/bin/python bench/bench_shuffle.py --samples 680000 --shard-size 21000 --ranks 8 --batch 128 --epochs 4
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable

import numpy as np

from r3fa.loaders.order import DEFAULT_BLOCK_SIZE, epoch_order

BUFFER = 1024  # the shuffle buffer of the loaders before the canonical order


def _old_seed(*parts: int) -> int:
    """The loaders' former `derive_seed`."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def _old_buffer(samples: list[int], seed: int) -> list[int]:
    """The former `torch_loader._shuffled`, verbatim in effect."""
    rng = random.Random(seed)
    pool: list[int] = []
    out = []
    for sample in samples:
        pool.append(sample)
        if len(pool) >= BUFFER:
            j = rng.randrange(len(pool))
            pool[j], pool[-1] = pool[-1], pool[j]
            out.append(pool.pop())
    rng.shuffle(pool)
    return out + pool


def buffer_order(sizes: list[int], seed: int, epoch: int, ranks: int, batch: int) -> np.ndarray:
    """Samples by consumption position (step x ranks x batch + rank x batch + slot), drop_last as in training."""
    total = sum(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    shard_order = np.random.default_rng(_old_seed(seed, epoch, 0)).permutation(len(sizes))
    concatenated = np.concatenate([np.arange(starts[s], starts[s] + sizes[s]) for s in shard_order])
    steps = (total // ranks) // batch
    out = np.empty(steps * ranks * batch, np.int64)
    for rank in range(ranks):
        begin, end = total * rank // ranks, total * (rank + 1) // ranks
        served = _old_buffer(concatenated[begin:end].tolist(), _old_seed(seed, epoch, rank, 1))[: steps * batch]
        for step in range(steps):
            at = step * ranks * batch + rank * batch
            out[at : at + batch] = served[step * batch : (step + 1) * batch]
    return out


def canonical_order(shuffle: str) -> Callable[[list[int], int, int, int, int], np.ndarray]:
    def order(sizes: list[int], seed: int, epoch: int, ranks: int, batch: int) -> np.ndarray:
        full = epoch_order(sizes, seed, epoch, shuffle, DEFAULT_BLOCK_SIZE)
        return full[: len(full) // (ranks * batch) * (ranks * batch)]  # drop_last, as in training

    return order


def ideal_order(sizes: list[int], seed: int, epoch: int, ranks: int, batch: int) -> np.ndarray:
    total = sum(sizes)
    full = np.random.default_rng([seed, epoch, 12345]).permutation(total)
    return full[: total // (ranks * batch) * (ranks * batch)]


def _positions(order: np.ndarray, total: int) -> np.ndarray:
    where = np.full(total, -1, np.int64)
    where[order] = np.arange(len(order))
    return where


def _pairs(groups: np.ndarray) -> int:
    _, counts = np.unique(groups, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def compare(a: np.ndarray, b: np.ndarray, total: int, batch: int) -> tuple[float, float]:
    """(co-batch rate for batches of `batch` positions, Spearman rho) between two consecutive epochs."""
    pa, pb = _positions(a, total), _positions(b, total)
    both = (pa >= 0) & (pb >= 0)
    pa, pb = pa[both], pb[both]
    ba, bb = pa // batch, pb // batch
    rate = _pairs(ba * (bb.max() + 1) + bb) / _pairs(ba)
    ra, rb = np.argsort(np.argsort(pa)), np.argsort(np.argsort(pb))  # ranks among the samples in both epochs
    rho = float(np.corrcoef(ra, rb)[0, 1])
    return rate, rho


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=680_000)
    parser.add_argument("--shard-size", type=int, default=21_000)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128, help="per-rank batch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs (pairs compared: epochs - 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sizes = [args.shard_size] * (args.samples // args.shard_size)
    if args.samples % args.shard_size:
        sizes.append(args.samples % args.shard_size)
    orders = {
        "ideal (random permutation)": ideal_order,
        "buffer (before: shard permutation + 1024 buffer)": buffer_order,
        "canonical global (new default)": canonical_order("global"),
        f"canonical py1br (block {DEFAULT_BLOCK_SIZE})": canonical_order("py1br"),
    }
    print(f"machine: {platform.processor() or platform.machine()}; {args.samples} samples in {len(sizes)} shards "
          f"of <= {args.shard_size}; {args.ranks} ranks x batch {args.batch}; epochs 0..{args.epochs - 1}")  # fmt: skip
    print("| order | co-batch rate, per-rank batch | co-batch rate, global batch | Spearman rho (mean, max abs) | s/epoch |")
    print("|---|---|---|---|---|")
    for name, make in orders.items():
        start = time.perf_counter()
        epochs = [make(sizes, args.seed, e, args.ranks, args.batch) for e in range(args.epochs)]
        seconds = (time.perf_counter() - start) / args.epochs
        local = [compare(a, b, args.samples, args.batch) for a, b in zip(epochs, epochs[1:])]
        glob = [compare(a, b, args.samples, args.batch * args.ranks)[0] for a, b in zip(epochs, epochs[1:])]
        rhos = [rho for _, rho in local]
        print(f"| {name} | {np.mean([r for r, _ in local]):.3g} | {np.mean(glob):.3g} | "
              f"{np.mean(rhos):+.4f}, {np.max(np.abs(rhos)):.4f} | {seconds:.2f} |")  # fmt: skip
    b, g = args.batch, args.batch * args.ranks
    print(f"expected for a uniform shuffle: per-rank {(b - 1) / (args.samples - 1):.3g}, global {(g - 1) / (args.samples - 1):.3g}, "
          f"|rho| ~ {1 / np.sqrt(args.samples):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
