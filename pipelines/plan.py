"""The build plan: every sample of a shard set named before any image is read.

Discover the sources' inputs (`r3fa.readers.discover_*`: each a `SourceItem`, or a `Rejection` of an unpaired
file or a key collision, which the plan keeps so that the build reports it), expand each into its augmentation copies
(`r3fa.augment.copies_for`) and the face-profiling jobs (`pipelines.synthesis_stage.synthesis_jobs`), put
each sample in a split by a hash of its subject, shuffle each split with the seed and cut it into shards of
a fixed size. The plan is small metadata (keys and file paths); it is the same on every run of the same
config, which is what lets an interrupted build resume shard by shard.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipelines.mix import MixConfig, SourceConfig
from r3fa.augment import copies_for
from r3fa.errors import UserError
from r3fa.landmarks68 import discover_landmarks68
from r3fa.readers import Input, SourceItem, discover_300wlp, discover_aflw2000, unique_keys
from r3fa.records import Rejection

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
    """The whole build: the source items (for the inputs hash), the inputs set aside while discovering them,
    and the shards, train first. Every discovered input is in `items` or in `rejected`."""

    items: tuple[SourceItem, ...]
    shards: tuple[ShardSpec, ...]
    rejected: tuple[Rejection, ...] = ()

    @property
    def n_samples(self) -> int:
        return sum(len(s.samples) for s in self.shards)

    def inputs_by_source(self) -> dict[str, int]:
        """Inputs discovered per source name (items and discovery rejections)."""
        return dict(sorted(Counter([*(i.source for i in self.items), *(r.source for r in self.rejected)]).items()))


def discover_source(source: SourceConfig) -> list[Input]:
    """The inputs of one configured source, in the readers' sorted order, cut at `limit`.

    Raises:
        UserError: the root is not a folder, or it holds no (image, annotation) pair.
    """
    root = source.resolved_root()
    if not root.is_dir():
        raise UserError(f"source {source.kind} root {root}: not a folder (check the mix config's sources[].root)")
    if source.kind == "300wlp":
        inputs = discover_300wlp(root)
    elif source.kind == "landmarks68":
        inputs = discover_landmarks68(root, source.resolved_points(), source.style)
    else:
        inputs = discover_aflw2000(root, source.fold, source.n_folds)
    inputs = inputs[: source.limit]
    if not any(isinstance(entry, SourceItem) for entry in inputs):
        raise UserError(
            f"source {source.kind} root {root}: no image with its .mat annotation found "
            f"({len(inputs)} unusable file(s)); check the path and the folder layout"
        )
    return inputs


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
        UserError: a source root that is not a folder or holds no pair (`discover_source`).
    """
    inputs = unique_keys(entry for source in config.sources for entry in discover_source(source))
    items = [entry for entry in inputs if isinstance(entry, SourceItem)]
    rejected = tuple(entry for entry in inputs if isinstance(entry, Rejection))
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
    return Plan(tuple(items), tuple(shards), rejected)
