"""Pose-balanced sampling: an epoch order that draws every |yaw| bin equally often.

Face-alignment data is dominated by near-frontal faces, while the error that matters most is at large yaw.
Instead of changing the data, a training run can change how often it sees each sample: `pose_balanced_order`
gives the epoch's order as global sample indices (shards in manifest order, samples in tar order, the index
space of `r3fa.loaders.order`), drawn with replacement with weights so that each non-empty |yaw| bin
(`r3fa.metrics.yaw_bin`: 0-30, 30-60, 60-90 degrees) gets the same expected share of the epoch. The epoch keeps
its length (N draws for N samples), so steps per epoch and step budgets are unchanged.

The order is a pure function of (per-sample bins, seed, epoch): a resumed run recomputes the same order and
continues from its consumed position, like the uniform shuffles. The bins come from the shard set's per-sample
Parquet (`yaw` column, degrees of the stored label), read by `split_yaw_bins`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.shard_contract import load_manifest

SAMPLING_STREAM = 2  # generator stream of this order (r3fa.loaders.order uses 0 and 1 for its shuffles)


def split_yaw_bins(shard_dir: str | Path, split: str) -> np.ndarray:
    """The |yaw| bin index of every sample of `split`, in global index order (shards in manifest order).

    Raises:
        UserError: no readable manifest (`r3fa.shard_contract.load_manifest`).
        FileNotFoundError: a listed shard has no Parquet.
        ValueError: a Parquet's row count differs from the manifest's count, or a yaw is not finite.
    """
    shard_dir = Path(shard_dir)
    parts = []
    for entry in load_manifest(shard_dir).split_shards(split):
        path = shard_dir / entry.parquet
        yaw = pq.read_table(path, columns=["yaw"]).column("yaw").to_numpy()
        if len(yaw) != entry.count or not np.all(np.isfinite(yaw)):
            raise ValueError(f"{path}: {len(yaw)} finite yaw values expected {entry.count}")
        parts.append(yaw_bin(yaw))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def balanced_weights(bins: np.ndarray) -> np.ndarray:
    """Per-sample draw probabilities: every non-empty bin gets the same total probability, equal inside a bin."""
    bins = np.asarray(bins)
    counts = np.bincount(bins, minlength=len(BIN_NAMES))
    present = np.count_nonzero(counts)
    if present == 0:
        return np.zeros(0, np.float64)
    return 1.0 / (present * counts[bins])


def pose_balanced_order(bins: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The order of epoch `epoch`: `len(bins)` global sample indices (int64) drawn with `balanced_weights`.

    Args:
        bins: `(N,)` |yaw| bin index of each sample, in global index order (`split_yaw_bins`).
        seed: run seed.
        epoch: epoch number.
    """
    bins = np.asarray(bins)
    if bins.size == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), SAMPLING_STREAM]))
    return rng.choice(bins.size, size=bins.size, replace=True, p=balanced_weights(bins)).astype(np.int64)
