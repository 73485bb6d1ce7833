"""The build plan: every sample of a shard set named before any image is read.

Enumerate the sources into `SourceItem`s, expand each into its augmentation copies
(`r3fa.augment.copies_for`) and the face-profiling jobs (`pipelines.synthesis_stage.synthesis_jobs`), put
each sample in a split by a hash of its subject, shuffle each split with the seed and cut it into shards of
a fixed size. The plan is small metadata (keys and file paths); it is the same on every run of the same
config, which is what lets an interrupted build resume shard by shard.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipelines.mix import MixConfig, SourceConfig
from r3fa.augment import copies_for
from r3fa.readers import SourceItem, iter_300wlp, iter_aflw2000

SPLITS = ("train", "val")


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """One planned sample.

    Attributes:
        key: the sample's key (no dots): `{item key}_a{copy}` or `{item key}_p{n}` (n-th profile view).
        item: the source item it is made from.
        stage: "augment" (copy `copy_index` of the item) or "synthesis" (a profile view).
        copy_index: augmentation copy (0 is the plain crop when the policy includes the original).
        yaw_increment: requested yaw change of a profile view, degrees.
    """

    key: str
    item: SourceItem
    stage: Literal["augment", "synthesis"]
    copy_index: int = 0
    yaw_increment: float = 0.0


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: its file stem, split, position within the split and samples in write order."""

    name: str
    split: str
    index: int
    samples: tuple[SampleSpec, ...]

    @property
    def tar(self) -> str:
        return f"{self.name}.tar"

    def fingerprint(self, stamp: str) -> str:
        """sha256 of a build stamp (config + inputs hash) and the shard's keys: a `.done` marker counts only
        for this exact shard of this build."""
        digest = hashlib.sha256(stamp.encode())
        for spec in self.samples:
            digest.update(f"\n{spec.key}".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class Plan:
    """The whole build: the source items (for the inputs hash) and the shards, train first."""

    items: tuple[SourceItem, ...]
    shards: tuple[ShardSpec, ...]

    @property
    def n_samples(self) -> int:
        return sum(len(s.samples) for s in self.shards)


def iter_source(source: SourceConfig) -> Iterator[SourceItem]:
    """The items of one configured source, in the readers' sorted order, cut at `limit`."""
    root = source.resolved_root()
    if source.kind == "300wlp":
        items = iter_300wlp(root)
    else:
        items = iter_aflw2000(root, source.fold, source.n_folds)
    return itertools.islice(items, source.limit)


def split_of(subject_id: str, val_fraction: float) -> str:
    """"val" when a hash of the subject, as a number in [0, 1), falls below `val_fraction`, else "train".

    The seed is left out on purpose: a subject stays in its split across seeds and configs.
    """
    h = int.from_bytes(hashlib.blake2b(subject_id.encode(), digest_size=8).digest(), "little")
    return "val" if h / 2.0**64 < val_fraction else "train"


def _sample_specs(config: MixConfig, items: list[SourceItem]) -> list[SampleSpec]:
    specs = [
        SampleSpec(f"{item.key}_a{copy}", item, "augment", copy_index=copy)
        for item in items
        for copy in range(copies_for(item.key, config.augmentation, config.seed))
    ]
    synthesis = config.synthesis_config()
    if synthesis is not None:
        from pipelines.synthesis_stage import synthesis_jobs

        views: dict[int, int] = {}
        for source_index, increment in synthesis_jobs(synthesis, len(items), config.seed):
            n = views[source_index] = views.get(source_index, -1) + 1
            item = items[source_index]
            specs.append(SampleSpec(f"{item.key}_p{n}", item, "synthesis", yaw_increment=increment))
    return specs


def make_plan(config: MixConfig) -> Plan:
    """Plan a build.

    Args:
        config: the mix.

    Returns:
        The plan: shards `{name}-{split}-{NNNNNN}` of `config.shard_samples()` samples (the last of a split
        smaller), each split shuffled with a generator seeded by (seed, split).

    Raises:
        ValueError: two source items with the same key (e.g. one source listed twice).
    """
    items = [item for source in config.sources for item in iter_source(source)]
    duplicates = sorted(k for k, n in Counter(item.key for item in items).items() if n > 1)[:5]
    if duplicates:
        raise ValueError(f"source items with the same key (a source listed twice?): {duplicates}")
    by_split: dict[str, list[SampleSpec]] = {split: [] for split in SPLITS}
    for spec in _sample_specs(config, items):
        by_split[split_of(spec.item.subject_id, config.val_fraction)].append(spec)
    size = config.shard_samples()
    shards = []
    for split_index, split in enumerate(SPLITS):
        specs = by_split[split]
        order = np.random.default_rng([config.seed, split_index]).permutation(len(specs))
        shuffled = [specs[i] for i in order]
        for index, start in enumerate(range(0, len(shuffled), size)):
            name = f"{config.name}-{split}-{index:06d}"
            shards.append(ShardSpec(name, split, index, tuple(shuffled[start : start + size])))
    return Plan(tuple(items), tuple(shards))
