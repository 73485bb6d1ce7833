"""What training and evaluation take from a shard set: its whitening, its identity and its crop convention.

A module of its own so that the readers of these three facts (the training engine and its checkpoints, the
evaluation flow's mean-parameter baseline, the retrain flow's run records) need neither the training engine nor
the raw manifest: `read_dataset_info` reads them through the shard-set contract (`r3fa.shard_contract`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r3fa.crop import CropConvention
from r3fa.params import Whitening
from r3fa.records import DATASET_CONVENTION
from r3fa.shard_contract import load_manifest


@dataclass(frozen=True)
class DatasetInfo:
    """What training needs from a shard set's `manifest.json`."""

    whitening: Whitening
    manifest_hash: str  # see `read_dataset_info`
    convention: CropConvention = DATASET_CONVENTION


def read_dataset_info(shard_dir: str | Path) -> DatasetInfo:
    """Whitening statistics, manifest hash (`ShardSetManifest.identity`: the data, not the code version) and
    crop convention of a shard set.

    Raises:
        UserError: `shard_dir` holds no readable `manifest.json` (`r3fa.shard_contract.load_manifest`).
    """
    manifest = load_manifest(shard_dir)
    return DatasetInfo(manifest.whitening.to_whitening(), manifest.identity(), manifest.crop_convention)
