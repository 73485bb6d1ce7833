"""The build plan: every candidate sample of a shard set named before any image is read.

Discover the sources' inputs (`r3fa.readers.discover_*`: each a `SourceItem`, or a `Rejection` of an unpaired
file or a key collision, which the plan keeps so that the build reports it), expand each into its candidates:
augmentation copies (`r3fa.augment.copies_for`, plus reserve copies when the mix targets an exact real count)
and face-profiling views (`pipelines.synthesis_stage.synthesis_jobs`, spread round robin over the sources whose
|yaw| can still grow, plus a reserve when the mix targets an exact synthetic count). Each candidate gets its
split (a hash of its subject) and its rank in a fixed, seeded order per stage: after phase 1 has made every
candidate, the build keeps the first `target` accepted ones by rank (`pipelines.cut`).

The candidates are grouped by source item (all of an item's candidates are made from one decode) and cut
into phase-1 parts (`parts`); once the cut is known, `assign_shards` shuffles each split's delivered samples
with the seed and cuts them into shards of a fixed size. The plan is small metadata (keys and file paths);
it is the same on every run of the same config, which is what lets an interrupted build resume.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipelines.mix import MAX_COPIES_PER_IMAGE, MixConfig, SourceConfig
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
        split: "train" or "val" (`split_of` its subject).
        rank: position in its stage's cut order (the cut keeps the first `target` accepted by rank).
    """

    key: str
    item: SourceItem
    stage: Literal["augment", "synthesis"]
    copy_index: int = 0
    yaw_increment: float = 0.0
    split: str = "train"
    rank: int = 0


class KeyFingerprint:
    """sha256 of a build stamp and of keys in order, fed one key at a time: what a part's or a shard's
    completion marker names (a shard's writer recomputes it from the keys it reads, to check them)."""

    def __init__(self, stamp: str):
        self._digest = hashlib.sha256(stamp.encode())

    def add(self, key: str) -> None:
        """Feed the next key."""
        self._digest.update(f"\n{key}".encode())

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _fingerprint(stamp: str, samples: tuple[SampleSpec, ...]) -> str:
    fingerprint = KeyFingerprint(stamp)
    for spec in samples:
        fingerprint.add(spec.key)
    return fingerprint.hexdigest()


@dataclass(frozen=True)
class PartSpec:
    """One phase-1 task: the candidates of a run of consecutive source items, grouped by item."""

    name: str
    index: int
    samples: tuple[SampleSpec, ...]

    def fingerprint(self, stamp: str) -> str:
        """sha256 of a build stamp (config + inputs hash) and the part's keys: a part counts only for this
        exact part of this build."""
        return _fingerprint(stamp, self.samples)


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
        return _fingerprint(stamp, self.samples)


@dataclass(frozen=True)
class Plan:
    """The whole build: the source items (for the inputs hash), the inputs set aside while discovering them,
    the candidates (grouped by item, in item order) and the target per stage. Every discovered input is in
    `items` or in `rejected`."""

    items: tuple[SourceItem, ...]
    candidates: tuple[SampleSpec, ...]
    rejected: tuple[Rejection, ...] = ()
    targets: tuple[tuple[str, int | None], ...] = ()

    @property
    def n_samples(self) -> int:
        """Candidates planned."""
        return len(self.candidates)

    def target(self, stage: str) -> int | None:
        """The stage's target count, or None (deliver every accepted candidate)."""
        return dict(self.targets).get(stage)

    def inputs_by_source(self) -> dict[str, int]:
        """Inputs discovered per source name (items and discovery rejections)."""
        return dict(sorted(Counter([*(i.source for i in self.items), *(r.source for r in self.rejected)]).items()))

    def parts(self, name: str, sources_per_part: int) -> list[PartSpec]:
        """The phase-1 tasks: `sources_per_part` consecutive items each (all their candidates)."""
        by_item: dict[str, list[SampleSpec]] = {}
        for spec in self.candidates:
            by_item.setdefault(spec.item.key, []).append(spec)
        groups = list(by_item.values())
        starts = range(0, len(groups), sources_per_part)
        return [
            PartSpec(f"{name}-part-{index:06d}", index, tuple(s for g in groups[start : start + sources_per_part] for s in g))
            for index, start in enumerate(starts)
        ]


def discover_source(source: SourceConfig) -> list[Input]:
    """The inputs of one configured source, in the readers' sorted order, cut at `limit`.

    Raises:
        UserError: the root is not a folder, or it holds no (image, annotation) pair.
    """
    root = source.resolved_root()
    if not root.is_dir():
        raise UserError(f"source {source.kind} root {root}: not a folder (check the mix config's sources[].root)")
    if source.kind == "300wlp":
        inputs = discover_300wlp(root, source.limit)
    elif source.kind == "landmarks68":
        inputs = discover_landmarks68(root, source.resolved_points(), source.style)[: source.limit]
    else:
        inputs = discover_aflw2000(root, source.fold, source.n_folds, source.limit)
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


def _augment_specs(config: MixConfig, items: list[SourceItem]) -> list[SampleSpec]:
    """Each item's copies (`copies_for`), ranked in a seeded order, then the reserve copies a real target asks
    for (round robin over the items in a seeded order, copy numbers continuing the item's own)."""
    copies = [copies_for(item.key, config.augmentation, config.seed) for item in items]
    primary = [(i, copy) for i, n in enumerate(copies) for copy in range(n)]
    target = config.stage_targets()["augment"]
    wanted = len(primary) if target is None else max(len(primary), math.ceil(target * (1 + config.reserve_fraction)))
    rng = np.random.default_rng([config.seed, 2])
    ranks = np.empty(len(primary), np.int64)
    ranks[rng.permutation(len(primary))] = np.arange(len(primary))
    reserve_order = rng.permutation(len(items))
    reserve = [(int(reserve_order[j % len(items)]), j // len(items)) for j in range(wanted - len(primary))]
    reserve = [(i, copies[i] + extra) for i, extra in reserve]
    if any(copy >= MAX_COPIES_PER_IMAGE for _, copy in reserve):
        raise UserError(f"targets.real {target} needs more than {MAX_COPIES_PER_IMAGE} copies of an image; "
                        "lower the target or add sources")  # fmt: skip
    specs = [(items[i], copy, int(rank)) for (i, copy), rank in zip(primary, ranks)]
    specs += [(items[i], copy, len(primary) + j) for j, (i, copy) in enumerate(reserve)]
    split = {item.key: split_of(item.subject_id, config.val_fraction) for item in items}
    return [
        SampleSpec(f"{item.key}_a{copy}", item, "augment", copy, 0.0, split[item.key], rank) for item, copy, rank in specs
    ]


def _synthesis_specs(config: MixConfig, items: list[SourceItem]) -> list[SampleSpec]:
    """The face-profiling views: the target plus reserve (or `synthesis.count`), over the items that can turn."""
    synthesis = config.synthesis_config()
    if synthesis is None:
        return []
    from pipelines.synthesis_stage import can_turn, synthesis_jobs

    target = config.stage_targets()["synthesis"]
    count = synthesis.count if target is None else math.ceil(target * (1 + config.reserve_fraction))
    if count == 0:
        return []
    eligible = [i for i, item in enumerate(items) if can_turn(item)]
    if not eligible:
        raise UserError("face profiling: no source image whose |yaw| can still grow; remove the synthesis section")
    views: dict[int, int] = {}
    specs = []
    for rank, (index, increment) in enumerate(synthesis_jobs(synthesis, len(items), config.seed, eligible, count)):
        n = views[index] = views.get(index, -1) + 1
        item = items[index]
        split = split_of(item.subject_id, config.val_fraction)
        specs.append(SampleSpec(f"{item.key}_p{n}", item, "synthesis", 0, increment, split, rank))
    return specs


def make_plan(config: MixConfig) -> Plan:
    """Plan a build.

    Args:
        config: the mix.

    Returns:
        The plan: every candidate, grouped by item in the readers' order (an item's copies, then its views).

    Raises:
        UserError: a source root that is not a folder or holds no pair (`discover_source`), a target that
            needs more copies than allowed, or a synthesis section with no source able to turn.
    """
    inputs = unique_keys(entry for source in config.sources for entry in discover_source(source))
    items = [entry for entry in inputs if isinstance(entry, SourceItem)]
    rejected = tuple(entry for entry in inputs if isinstance(entry, Rejection))
    by_item: dict[str, list[SampleSpec]] = {item.key: [] for item in items}
    for spec in [*_augment_specs(config, items), *_synthesis_specs(config, items)]:
        by_item[spec.item.key].append(spec)
    candidates = tuple(spec for specs in by_item.values() for spec in specs)
    return Plan(tuple(items), candidates, rejected, tuple(config.stage_targets().items()))


def assign_shards(config: MixConfig, delivered: Sequence[SampleSpec]) -> tuple[ShardSpec, ...]:
    """Cut the delivered samples into shards: each split, in candidate order, shuffled with a generator seeded
    by (seed, split), in shards `{name}-{split}-{NNNNNN}` of `config.shard_samples()` samples (the last of a
    split smaller), train first."""
    size = config.shard_samples()
    shards = []
    for split_index, split in enumerate(SPLITS):
        specs = [spec for spec in delivered if spec.split == split]
        order = np.random.default_rng([config.seed, split_index]).permutation(len(specs))
        shuffled = [specs[i] for i in order]
        for index, start in enumerate(range(0, len(shuffled), size)):
            name = f"{config.name}-{split}-{index:06d}"
            shards.append(ShardSpec(name, split, index, tuple(shuffled[start : start + size])))
    return tuple(shards)
