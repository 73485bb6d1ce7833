"""The stages over sample records: the candidates of a run of source items become encoded samples or rejections.

ingest (`ingest`: each item read and decoded once, `r3fa.readers.load_source_files`, and cut into its
augmented copies right away; the geometry and the labels of all the items each computed in one pass) -> for
each candidate, augment (`make_copies`: all the copies of all the items, labelled in one vectorised pass,
`r3fa.augment.augment_copies`) or synthesis
(`pipelines.synthesis_stage.synthesize_sample`) -> label check (finite label, label NME within the threshold)
-> encode (JPEG crop, raw float32 labels, JSON summary: the tar members, and the Parquet row). The vectorised
passes give every sample the same bits whichever items share its pass, so how a build groups items never
changes its bytes. A bad input never stops a build: whatever a stage raises for one candidate
(`BadInputError`, `cv2.error`, `numpy.linalg.LinAlgError`, `OSError`, ...) becomes that candidate's rejection
with its path, reason, stage and exception class (`r3fa.records.rejection_of`); when a pass over many fails,
its work is done again one item or copy at a time to find whose failure it was. An item that cannot be
ingested rejects each of its candidates with the same reason. Only `KeyboardInterrupt`/`SystemExit` (not
`Exception`s) go through.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from json.encoder import encode_basestring_ascii as _json_str
from typing import NamedTuple

import cv2
import numpy as np

from pipelines.mix import MixConfig
from pipelines.plan import SampleSpec
from pipelines.tables import augment_json, canonical_json, sample_row
from pipelines.writer import SampleTar, sample_tar
from r3fa.augment import (CopyGeometry, CopyJob, augment_copies, augment_sample, copy_rng, copy_rngs,
                          draw_geometry)
from r3fa.crop import roi_from_landmarks
from r3fa.io import Annotation
from r3fa.readers import (BaseSample, SourceFiles, SourceRead, load_source_files, load_source_sample,
                          measure_sources, read_labels, sampling_steps, source_reads, warp_crop)
from r3fa.records import Rejection, SampleRecord, rejection_of
from r3fa.shard_contract import IMAGE_EXT, LANDMARKS_EXT, META_EXT, PARAMS_EXT, label_bytes


@dataclass(frozen=True)
class EncodedSample:
    """A sample ready to be written: its tar bytes and its Parquet row (`pipelines.tables.sample_row`: without
    the shard, set when written)."""

    key: str
    tar: SampleTar
    row: tuple


def sample_members(record: SampleRecord, split: str, jpeg: bytes, augment: str) -> dict[str, bytes]:
    """The tar members of one sample: JPEG crop, raw little-endian float32 labels and a JSON summary
    (`sample_meta`; `augment` is `pipelines.tables.augment_json` of the record)."""
    return {
        IMAGE_EXT: jpeg,
        PARAMS_EXT: label_bytes(PARAMS_EXT, record.params),
        LANDMARKS_EXT: label_bytes(LANDMARKS_EXT, record.landmarks),
        META_EXT: sample_meta(record, split, augment).encode(),
    }


def sample_meta(record: SampleRecord, split: str, augment: str) -> str:
    """The JSON summary member: `canonical_json` of {augment (the applied ops), fitted, key, label_nme,
    parent_key, pose_deg, source, split, subject_id, synthetic, yaw_increment}, written out directly in that
    (sorted) key order with `json`'s own string and number forms: the same text at a quarter of the cost
    (`tests/test_shard_contract.py` compares the two)."""
    pose = ", ".join(_json_float(v) for v in record.pose_deg)
    return (
        f'{{"augment": {augment}, "fitted": {_json_bool(record.fitted)}, "key": {_json_str(record.key)}, '
        f'"label_nme": {_json_float(record.label_nme)}, "parent_key": {_json_str(record.parent_key)}, '
        f'"pose_deg": [{pose}], "source": {_json_str(record.source)}, "split": {_json_str(split)}, '
        f'"subject_id": {_json_str(record.subject_id)}, "synthetic": {_json_bool(record.synthetic)}, '
        f'"yaw_increment": {_json_float(record.yaw_increment)}}}'
    )


def _json_float(value: object) -> str:
    """A number as `json` writes a float (`repr`; NaN and the infinities by `json`'s names)."""
    value = float(value)
    return float.__repr__(value) if math.isfinite(value) else canonical_json(value)


def _json_bool(value: object) -> str:
    return "true" if value else "false"


def encode_jpeg(crop: np.ndarray, quality: int) -> bytes:
    """Encode a BGR crop as JPEG at a fixed quality (deterministic)."""
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


class CutCopy(NamedTuple):
    """An augmented copy cut as soon as its image was decoded (`ingest`): its generator (its geometric ops
    drawn from it), its geometry, and its crop (None if cutting failed: cut again, and its failure found, by
    `r3fa.augment.augment_copies`)."""

    rng: np.random.Generator
    geometry: CopyGeometry
    crop: np.ndarray | None


def ingest(
    groups: Sequence[Sequence[SampleSpec]], config: MixConfig
) -> tuple[list[BaseSample | Rejection], dict[str, CutCopy]]:
    """The source items of groups of candidates (`groups[i]` the candidates of one item), one per group: each
    item's files read and checked (`r3fa.readers.load_source_files`; an item with landmarks only is fitted),
    then the geometry of all of them (`r3fa.readers.source_reads`) and all their labels
    (`r3fa.readers.measure_sources`), each in one vectorised pass. An item that cannot be read is its
    rejection (stage "ingest"); if a pass fails, it is done again one item at a time, so a failure is the
    rejection of the item that caused it only.

    The annotations and landmarks are all read before the images are decoded (`r3fa.readers.read_labels`):
    parsing small `.mat` files between decodes of 600 KB images ran ~10 % slower (caches). From them the
    augmented copies' geometry is drawn (`r3fa.augment.draw_geometry`: it needs no pixels), so that each
    image is cut into its copies right after its decode, while it is still in the CPU's cache (the warps of a
    150-image build took 56 ms instead of 65 ms after the batch's other decodes). The drawn geometry also
    says which images can be decoded at half size (`_half_size`, with `config.half_size_decode`): those none
    of whose crops samples them more finely than every second pixel. Labels that fail here are read again
    after their image, so an item with a bad image and a bad annotation is still rejected for its image.

    Returns:
        The items (or their rejections), and the copies cut, by candidate key.
    """
    specs = [group[0] for group in groups]
    labels = [_labels(spec) for spec in specs]
    drawn = _draw_copies(groups, labels, config)
    halved = _half_size(groups, drawn) if config.half_size_decode else [False] * len(groups)
    loaded: list[SourceFiles | BaseSample | Rejection] = []
    cut: dict[str, CutCopy] = {}
    for group, spec, item_labels, half_size in zip(groups, specs, labels, halved):
        files = _load(spec, config, item_labels, half_size)
        if type(files) is SourceFiles:
            cut.update((copy.key, _cut(files, *drawn[copy.key])) for copy in group if copy.key in drawn)
        loaded.append(files)
    reads = _in_one_pass(specs, loaded, SourceFiles, partial(source_reads, refit=config.refit))
    return _in_one_pass(specs, reads, SourceRead, measure_sources), cut


def _draw_copies(
    groups: Sequence[Sequence[SampleSpec]], labels: Sequence[tuple[Annotation, np.ndarray] | None], config: MixConfig
) -> dict[str, tuple[np.random.Generator, CopyGeometry]]:
    """The generators and drawn geometry of the augmented copies of the items whose labels were read, by key,
    in one pass. If the pass fails, item by item: an item whose copies cannot be drawn has none here
    (`r3fa.augment.augment_copies` draws them again, from fresh generators, and finds the failure), and what
    the others get does not depend on which items share their batch."""
    copies = [(spec, item_labels[1]) for group, item_labels in zip(groups, labels) if item_labels is not None
              for spec in group if spec.stage != "synthesis"]  # fmt: skip
    if not copies:
        return {}
    try:
        rngs = copy_rngs(config.seed, [(spec.item.key, spec.copy_index) for spec, _ in copies])
        rois = roi_from_landmarks(np.stack([landmarks for _, landmarks in copies]))
        geometry = draw_geometry(rngs, [spec.copy_index for spec, _ in copies], rois, config.augmentation)
    except Exception:  # drawn again, and attributed to its copy, in `make_copies`
        if len(groups) == 1:
            return {}
        return {key: drawn for group, item_labels in zip(groups, labels)
                for key, drawn in _draw_copies([group], [item_labels], config).items()}  # fmt: skip
    return {spec.key: (rng, drawn) for (spec, _), rng, drawn in zip(copies, rngs, geometry)}


def _half_size(groups: Sequence[Sequence[SampleSpec]], drawn: Mapping[str, tuple]) -> list[bool]:
    """Per item, whether its image can be decoded at half size: every candidate is an augmented copy already
    drawn (a face-profiling view needs the full-size texture) and samples the image at a step of at least 2
    pixels (`r3fa.readers.sampling_steps`), so the half-size image holds every detail its crops can show."""
    if not drawn:
        return [False] * len(groups)
    steps = dict(zip(drawn, sampling_steps(np.stack([geometry.transform.matrix for _, geometry in drawn.values()]))))
    return [all(steps.get(spec.key, 0.0) >= 2.0 for spec in group) for group in groups]


def _cut(files: SourceFiles, rng: np.random.Generator, geometry: CopyGeometry) -> CutCopy:
    try:
        crop = warp_crop(files.image, geometry.transform, step=files.image_step)
    except Exception:  # cut again, and attributed to its copy, in `make_copies`
        crop = None
    return CutCopy(rng, geometry, crop)


def _labels(spec: SampleSpec) -> tuple[Annotation, np.ndarray] | None:
    """The item's `read_labels`, or None (no annotation, or labels that cannot be read: `_load` finds out why)."""
    if not spec.item.has_label:
        return None
    try:
        return read_labels(spec.item)
    except Exception:  # read again, after its image, in `_load`
        return None


def _load(
    spec: SampleSpec, config: MixConfig, labels: tuple[Annotation, np.ndarray] | None, half_size: bool
) -> SourceFiles | BaseSample | Rejection:
    item = spec.item
    try:
        if not item.has_label and item.landmark_style:
            return load_source_sample(item, max_image_pixels=config.max_image_pixels)  # fitted to its landmarks
        return load_source_files(item, max_image_pixels=config.max_image_pixels, labels=labels, half_size=half_size)
    except Exception as err:  # any failure of one input is its rejection
        return _ingest_rejection(spec, err)


def _in_one_pass(specs: Sequence[SampleSpec], values: list, kind: type, make: Callable[[list], list]) -> list:
    """`make` of the values of exactly type `kind` (a `BaseSample` is not a `SourceRead` to measure), in one
    call; the other values pass through. If the call fails, `make` of each alone: a failure is the rejection
    of its item only."""
    todo = [value for value in values if type(value) is kind]
    try:
        made = iter(make(todo) if todo else [])
        return [next(made) if type(value) is kind else value for value in values]
    except Exception:  # found again, and attributed to its item, below
        return [_alone(spec, make, value) if type(value) is kind else value for spec, value in zip(specs, values)]


def _alone(spec: SampleSpec, make: Callable[[list], list], value: object) -> object:
    try:
        return make([value])[0]
    except Exception as err:  # any failure of one input is its rejection
        return _ingest_rejection(spec, err)


def _ingest_rejection(spec: SampleSpec, err: Exception) -> Rejection:
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


def make_copies(
    groups: Sequence[Sequence[SampleSpec]],
    bases: Sequence[BaseSample | Rejection],
    cut: Mapping[str, CutCopy],
    config: MixConfig,
) -> dict[str, SampleRecord | Rejection]:
    """The augmented copies among the candidates of ingested items (`groups[i]` of `bases[i]`; `cut`: those
    already drawn and cut by `ingest`), by key, made together (`r3fa.augment.augment_copies`: one vectorised
    label pass). If making them together fails, each copy is made alone, so a failure is the rejection of
    the copy that caused it only; a copy's bytes are the same either way."""
    copies = [(spec, base) for group, base in zip(groups, bases) if isinstance(base, BaseSample)
              for spec in group if spec.stage != "synthesis"]  # fmt: skip
    if not copies:
        return {}
    jobs = [_copy_job(spec, base, cut.get(spec.key), config.seed) for spec, base in copies]
    try:
        records = augment_copies(jobs, config.augmentation)
    except Exception:  # found again, and attributed to its copy, below
        return {spec.key: make_record(spec, base, config) for spec, base in copies}
    return {spec.key: check_label(record, spec, config.max_label_nme) for (spec, _), record in zip(copies, records)}


def _copy_job(spec: SampleSpec, base: BaseSample, cut: CutCopy | None, seed: int) -> CopyJob:
    if cut is None:
        return CopyJob(base, spec.item, copy_rng(seed, spec.item.key, spec.copy_index), spec.copy_index)
    return CopyJob(base, spec.item, cut.rng, spec.copy_index, cut.geometry, cut.crop)


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


def encode_record(record: SampleRecord, spec: SampleSpec, jpeg: bytes) -> EncodedSample | Rejection:
    """The record's tar members and Parquet row, or its rejection (stage "encode"); `jpeg`: its crop, encoded
    (`encode_jpeg` at the config's quality: a batch's crops are encoded in a row first, `make_samples`)."""
    try:
        augment = augment_json(record)
        members = sample_members(record, spec.split, jpeg, augment)
        tar = sample_tar(spec.key, members)
    except Exception as err:  # a sample that cannot be encoded is rejected like any other
        return rejection_of(err, spec.item.image_path, "encode")
    sha = hashlib.sha256(jpeg).hexdigest()
    row = sample_row(record, spec.split, augment, sha, members[PARAMS_EXT], members[LANDMARKS_EXT])
    return EncodedSample(spec.key, tar, row)


def make_samples(
    groups: Sequence[Sequence[SampleSpec]], config: MixConfig
) -> list[tuple[SampleSpec, EncodedSample | Rejection]]:
    """Make the candidates of source items, each group the candidates of one item (in plan order), every item
    decoded once, the labels of all the items and of all their copies each computed in one pass, then all
    the crops JPEG-encoded before the rest of each sample is written out (codec calls in a row, Python in a
    row: interleaved, each ran slower, caches).

    Returns:
        (candidate, its encoded sample or its rejection; a rejection's `key` and `source` are the
        candidate's), in the order of `groups`.
    """
    groups = [group for group in groups if group]
    with np.errstate(all="ignore"):  # hostile values overflow silently; the label check refuses what is not finite
        bases, cut = ingest(groups, config)
        copies = make_copies(groups, bases, cut, config)
        made = [(spec, _made(spec, base, copies, config)) for group, base in zip(groups, bases) for spec in group]
        jpegs = [_jpeg(record, config) for _, record in made]
        return [(spec, _encoded(spec, record, jpeg)) for (spec, record), jpeg in zip(made, jpegs)]


def _made(
    spec: SampleSpec, base: BaseSample | Rejection, copies: dict[str, SampleRecord | Rejection], config: MixConfig
) -> SampleRecord | Rejection:
    """A candidate's record or rejection, from its ingested item and the copies made."""
    if isinstance(base, Rejection):
        return base
    return copies[spec.key] if spec.key in copies else make_record(spec, base, config)


def _jpeg(record: SampleRecord | Rejection, config: MixConfig) -> bytes | Exception | None:
    """A record's JPEG crop, or why it cannot be encoded; None for a rejection."""
    if not isinstance(record, SampleRecord):
        return None
    try:
        return encode_jpeg(record.crop, config.jpeg_quality)
    except Exception as err:  # the sample's rejection, in `_encoded`
        return err


def _encoded(
    spec: SampleSpec, made: SampleRecord | Rejection, jpeg: bytes | Exception | None
) -> EncodedSample | Rejection:
    """A candidate's encoded sample, or its rejection with the candidate's key and source."""
    if isinstance(jpeg, Exception):
        made = rejection_of(jpeg, spec.item.image_path, "encode")
    elif isinstance(made, SampleRecord):
        made = encode_record(made, spec, jpeg)
    return replace(made, key=spec.key, source=spec.item.source) if isinstance(made, Rejection) else made
