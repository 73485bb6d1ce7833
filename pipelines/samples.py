"""The stages over sample records: one planned sample becomes a `SampleRecord` or a `Rejection`.

ingest (`r3fa.readers.load_source_sample`) -> augment (`r3fa.augment.augment_sample`) or synthesis
(`pipelines.synthesis_stage.synthesize_sample`) -> label check (finite label, label NME within the
threshold). Each planned sample reads its source again (the global shuffle scatters an item's copies over
the shards, so nothing is gained by keeping sources in memory). A bad input never stops a build: whatever
a stage raises for one sample (`BadInputError`, `cv2.error`, `numpy.linalg.LinAlgError`, `OSError`, ...)
becomes that sample's rejection with its path, reason, stage and exception class (`r3fa.records.rejection_of`).
Only `KeyboardInterrupt`/`SystemExit` (not `Exception`s) go through.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from pipelines.mix import MixConfig
from pipelines.plan import SampleSpec
from r3fa.augment import augment_sample, copy_rng
from r3fa.readers import load_source_sample
from r3fa.records import Rejection, SampleRecord, rejection_of


def make_sample(spec: SampleSpec, config: MixConfig) -> SampleRecord | Rejection:
    """Make one planned sample.

    Args:
        spec: the planned sample.
        config: the mix (augmentation policy, synthesis section, refit, rejection threshold, pixel limit, seed).

    Returns:
        The record, or the rejection (stage "ingest", "augment", "synthesis" or "label"; its `key` and
        `source` are the planned sample's).
    """
    with np.errstate(all="ignore"):  # hostile values overflow silently; the label check refuses what is not finite
        made = _make(spec, config)
    return replace(made, key=spec.key, source=spec.item.source) if isinstance(made, Rejection) else made


def _make(spec: SampleSpec, config: MixConfig) -> SampleRecord | Rejection:
    where = spec.item.annotation_path or spec.item.image_path
    try:
        base = load_source_sample(spec.item, refit=config.refit, max_image_pixels=config.max_image_pixels)
    except Exception as err:  # any failure of one sample is its rejection
        return rejection_of(err, where, "ingest")
    try:
        if spec.stage == "synthesis":
            from pipelines.synthesis_stage import synthesize_sample

            record = synthesize_sample(base, spec.item, spec.yaw_increment, spec.key, config.synthesis_config())
        else:
            rng = copy_rng(config.seed, spec.item.key, spec.copy_index)
            record = augment_sample(base, spec.item, config.augmentation, rng, spec.copy_index)
    except Exception as err:  # any failure of one sample is its rejection
        return rejection_of(err, spec.item.image_path, spec.stage)
    return check_label(record, spec, config.max_label_nme)


def check_label(record: SampleRecord, spec: SampleSpec, max_label_nme: float) -> SampleRecord | Rejection:
    """The record if its label is finite and its label NME is within `max_label_nme` (percent)."""
    where = spec.item.annotation_path or spec.item.image_path
    for name, value in (("params", record.params), ("landmarks", record.landmarks)):
        if not np.isfinite(value).all():
            return Rejection(where, f"non-finite values in the label's {name}", "label")
    if not record.label_nme <= max_label_nme:
        return Rejection(where, f"label NME {record.label_nme:.2f} % > {max_label_nme} %", "label")
    if record.key != spec.key:
        raise RuntimeError(f"stage made key {record.key!r} for planned sample {spec.key!r}")
    return record


def make_samples(specs: Sequence[SampleSpec], config: MixConfig) -> Iterator[tuple[SampleSpec, SampleRecord | Rejection]]:
    """Make planned samples one at a time, in order (nothing is kept: memory stays flat)."""
    for spec in specs:
        yield spec, make_sample(spec, config)
