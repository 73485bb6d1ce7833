"""Look inside a shard set: sample counts per split, source and |yaw| bin, and random samples from the tars.

The samples are read back from the tars exactly as a loader would (JPEG member + `lms.f32` member), so a
contact sheet drawn from them shows the stored labels, not a recomputation.
"""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from r3fa.io import decode_image
from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.shard_contract import IMAGE_EXT, LANDMARKS_EXT, load_manifest, read_label


def count_samples(out_dir: str | Path) -> Counter:
    """Samples per (split, source, |yaw| bin, synthetic), from the shards' Parquet files.

    Raises:
        UserError: no readable manifest (`r3fa.shard_contract.load_manifest`).
    """
    out = Path(out_dir)
    counts: Counter = Counter()
    for entry in load_manifest(out).shards:
        table = pq.read_table(out / entry.parquet, columns=["split", "source", "yaw", "synthetic"])
        bins = yaw_bin(table.column("yaw").to_numpy())
        columns = (table.column(c).to_pylist() for c in ("split", "source", "synthetic"))
        counts.update((split, source, BIN_NAMES[b], synthetic) for split, source, synthetic, b in zip(*columns, bins))
    return counts


def read_samples(out_dir: str | Path, n: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`n` random samples (all when fewer) as (key, BGR crop, stored landmarks `(2, 68)`), read from the tars.

    Args:
        out_dir: the shard set.
        n: how many.
        seed: which ones (a seeded draw over every key of the set).

    Raises:
        UserError: no readable manifest (`r3fa.shard_contract.load_manifest`).
    """
    out = Path(out_dir)
    keys = []
    for entry in load_manifest(out).shards:
        table = pq.read_table(out / entry.parquet, columns=["key"])
        keys += [(entry.file, key) for key in table.column("key").to_pylist()]
    rng = np.random.default_rng(seed)
    picked = [keys[i] for i in sorted(rng.choice(len(keys), size=min(n, len(keys)), replace=False))]
    wanted: dict[str, set[str]] = {}
    for shard, key in picked:
        wanted.setdefault(shard, set()).add(key)
    found: dict[str, dict[str, bytes]] = {}
    for shard, shard_keys in wanted.items():
        with tarfile.open(out / shard, "r:") as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                if key in shard_keys and ext in (IMAGE_EXT, LANDMARKS_EXT):
                    found.setdefault(key, {})[ext] = tar.extractfile(info).read()
    samples = []
    for _, key in picked:
        image = decode_image(found[key][IMAGE_EXT], key)
        landmarks = read_label(LANDMARKS_EXT, found[key][LANDMARKS_EXT]).reshape(2, 68)
        samples.append((key, image, landmarks))
    return samples
