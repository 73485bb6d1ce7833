"""The stages over sample records: the candidates of one source item become encoded samples or rejections.

ingest (`r3fa.readers.load_source_sample`, once per item: one decode, one label) -> for each of the item's
candidates, augment (`r3fa.augment.augment_copies`: all copies of the item, labelled in one vectorised pass) or
synthesis (`pipelines.synthesis_stage.synthesize_sample`)
-> label check (finite label, label NME within the threshold) -> encode (JPEG crop, raw float32 labels, JSON
summary: the tar members, and the Parquet row). A bad input never stops a build: whatever a stage raises for
one candidate (`BadInputError`, `cv2.error`, `numpy.linalg.LinAlgError`, `OSError`, ...) becomes that
candidate's rejection with its path, reason, stage and exception class (`r3fa.records.rejection_of`); an item
that cannot be ingested rejects each of its candidates with the same reason. Only
`KeyboardInterrupt`/`SystemExit` (not `Exception`s) go through.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from pipelines.mix import MixConfig
from pipelines.plan import SampleSpec
from pipelines.tables import plain_json, sample_row
from r3fa.augment import augment_copies, augment_sample, copy_rng
from r3fa.readers import BaseSample, load_source_sample
from r3fa.records import Rejection, SampleRecord, rejection_of
from r3fa.shard_contract import IMAGE_EXT, LANDMARKS_EXT, META_EXT, PARAMS_EXT, label_bytes


@dataclass(frozen=True)
class EncodedSample:
    """A sample ready to be written: its tar members and its Parquet row (without the shard, set when written)."""

    key: str
    members: dict[str, bytes]
    row: dict


def sample_members(record: SampleRecord, split: str, jpeg: bytes) -> dict[str, bytes]:
    """The tar members of one sample: JPEG crop, raw little-endian float32 labels and a JSON summary."""
    meta = {
        "key": record.key,
        "split": split,
        "source": record.source,
        "subject_id": record.subject_id,
        "parent_key": record.parent_key,
        "synthetic": bool(record.synthetic),
        "fitted": bool(record.fitted),
        "yaw_increment": float(record.yaw_increment),
        "pose_deg": [float(v) for v in record.pose_deg],
        "label_nme": float(record.label_nme),
        "augment": list(record.augment),
    }
    return {
        IMAGE_EXT: jpeg,
        PARAMS_EXT: label_bytes(PARAMS_EXT, record.params),
        LANDMARKS_EXT: label_bytes(LANDMARKS_EXT, record.landmarks),
        META_EXT: json.dumps(meta, sort_keys=True, default=plain_json).encode(),
    }


def encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    """Encode a BGR crop as JPEG at a fixed quality (deterministic)."""
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def load_base(spec: SampleSpec, config: MixConfig) -> BaseSample | Rejection:
    """Ingest a candidate's source item (decode + label), or its rejection (stage "ingest")."""
    try:
        return load_source_sample(spec.item, refit=config.refit, max_image_pixels=config.max_image_pixels)
    except Exception as err:  # any failure of one input is its rejection
        return rejection_of(err, spec.item.annotation_path or spec.item.image_path, "ingest")


def make_record(spec: SampleSpec, base: BaseSample, config: MixConfig) -> SampleRecord | Rejection:
    """One candidate's record from its ingested source, label checked (stage "augment", "synthesis", "label")."""
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


def make_records(specs: Sequence[SampleSpec], base: BaseSample, config: MixConfig) -> list[SampleRecord | Rejection]:
    """The records of one item's candidates, in order: its augmented copies made together (one vectorised
    label pass, `r3fa.augment.augment_copies`), each synthesis view alone. If making the copies together
    fails, each copy is made alone, so a failure is the rejection of the copy that caused it only."""
    copies = [spec for spec in specs if spec.stage != "synthesis"]
    together: dict[str, SampleRecord | Rejection] = {}
    if copies:
        seeded = [(copy_rng(config.seed, spec.item.key, spec.copy_index), spec.copy_index) for spec in copies]
        try:
            records = augment_copies(base, copies[0].item, config.augmentation, seeded)
        except Exception:  # found again, and attributed to its copy, below
            records = []
        together = {spec.key: check_label(r, spec, config.max_label_nme) for spec, r in zip(copies, records)}
    return [together[spec.key] if spec.key in together else make_record(spec, base, config) for spec in specs]


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


def encode_record(record: SampleRecord, spec: SampleSpec, config: MixConfig) -> EncodedSample | Rejection:
    """The record's tar members and Parquet row, or its rejection (stage "encode")."""
    try:
        jpeg = encode_jpeg(record.crop, config.jpeg_quality)
        members = sample_members(record, spec.split, jpeg)
    except Exception as err:  # a sample that cannot be encoded is rejected like any other
        return rejection_of(err, spec.item.image_path, "encode")
    return EncodedSample(spec.key, members, sample_row(record, "", spec.split, hashlib.sha256(jpeg).hexdigest()))


def make_item_samples(
    specs: Sequence[SampleSpec], config: MixConfig
) -> Iterator[tuple[SampleSpec, EncodedSample | Rejection]]:
    """Make the candidates of one source item (all of `specs` share `item`) from a single ingest, in order.

    Yields:
        (candidate, its encoded sample or its rejection; a rejection's `key` and `source` are the candidate's).
    """
    if not specs:
        return
    with np.errstate(all="ignore"):  # hostile values overflow silently; the label check refuses what is not finite
        base = load_base(specs[0], config)
        records = [base] * len(specs) if isinstance(base, Rejection) else make_records(specs, base, config)
    for spec, made in zip(specs, records):
        if isinstance(made, SampleRecord):
            with np.errstate(all="ignore"):
                made = encode_record(made, spec, config)
        yield spec, replace(made, key=spec.key, source=spec.item.source) if isinstance(made, Rejection) else made
