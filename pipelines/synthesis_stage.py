"""The face-profiling stage of the dataset builder: which sources to rotate by how much, and one sample.

The mix config's optional `synthesis:` section is `SynthesisConfig`. The shard builder asks
`synthesis_jobs` for a deterministic list of (source index, yaw increment) pairs over the sources whose
|yaw| can still grow (`can_turn`), loads each source's `BaseSample` once (`r3fa.readers.load_source_sample`)
and calls `synthesize_sample` per job; a rejected job raises `BadInputError` with a reason starting
"profiling:", which the builder records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from r3fa.crop import CROP_SIZE
from r3fa.io import BadInputError
from r3fa.params import pose_degrees
from r3fa.profiling import profile_face
from r3fa.profiling.rotate import applied_yaw_increment
from r3fa.readers import BaseSample, SourceItem
from r3fa.records import SampleRecord

STAGE = "face_profiling"


class SynthesisConfig(BaseModel):
    """The `synthesis:` section of a mix config.

    Attributes:
        stage: the synthesis method (only face profiling exists).
        count: total synthetic samples to make.
        profiles_per_image: profile views per source image per pass over the sources.
        yaw_increments_deg: the schedule of |yaw| increments (degrees) a source's views are drawn from
            (without repeats within one source); each increment turns the face further away from frontal
            and is cut short at 89 degrees.
        pitch_increment_deg: an optional pitch change applied to every view.
        output_size: side of the synthesised crops.
        max_hole_fraction: reject a view when more than this share of its rendered face has no source
            texture (self-occluded in the source, or outside the image).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    stage: Literal["face_profiling"] = STAGE
    count: int = Field(ge=0)
    profiles_per_image: int = Field(default=4, ge=1)
    yaw_increments_deg: list[float] = Field(default_factory=lambda: [10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    pitch_increment_deg: float = 0.0
    output_size: Literal[120] = CROP_SIZE
    max_hole_fraction: float = Field(default=0.15, gt=0.0, le=1.0)

    @field_validator("yaw_increments_deg")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or any(v <= 0 or v > 90 for v in value):
            raise ValueError("yaw increments must be a non-empty list of degrees in (0, 90]")
        return value


def can_turn(item: SourceItem) -> bool:
    """Whether face profiling can still increase the item's |yaw|, judged from its annotation's yaw
    (`Pose_Para[1]`, read alone: cheap enough for the plan). An item without an annotation (a fitted label)
    or one whose annotation cannot be read counts as able to turn: ingest decides about it."""
    if not item.annotation_path:
        return True
    from scipy.io import loadmat

    try:
        yaw = float(np.asarray(loadmat(item.annotation_path, variable_names=["Pose_Para"])["Pose_Para"]).reshape(-1)[1])
    except Exception:  # any unreadable annotation is ingest's to reject, not the plan's
        return True
    return not math.isfinite(yaw) or applied_yaw_increment(math.degrees(yaw), 1.0) != 0.0


def synthesis_jobs(
    config: SynthesisConfig, n_sources: int, seed: int, sources: Sequence[int] | None = None, count: int | None = None
) -> list[tuple[int, float]]:
    """One (source index, signed yaw increment in degrees) per synthetic sample, deterministic in `seed`.

    Round robin over the sources: each round visits every source once, in a seeded random order, so the
    views spread over all sources (a second view of a source only after every source has one). A source's
    increments are drawn from the schedule without repeats, `profiles_per_image` at a time (fewer when the
    schedule is shorter). The sign only matters for near-frontal faces (it picks which way they turn); it is
    drawn at random.

    Args:
        config: the synthesis section.
        n_sources: sources of the build (indices 0..n-1).
        seed: the mix seed.
        sources: the indices that may be turned (default all); e.g. without those whose |yaw| cannot grow.
        count: jobs to plan (default `config.count`), e.g. the target plus a reserve.
    """
    count = config.count if count is None else count
    if count == 0:
        return []
    eligible = np.arange(n_sources) if sources is None else np.asarray(sources, np.int64)
    if len(eligible) == 0:
        raise ValueError("face profiling needs at least one source image whose |yaw| can grow")
    rng = np.random.default_rng(seed)
    schedule = np.asarray(config.yaw_increments_deg, np.float64)
    per_source = min(config.profiles_per_image, len(schedule))
    jobs: list[tuple[int, float]] = []
    for _ in range(math.ceil(count / (per_source * len(eligible)))):
        picks = np.sort(rng.random((len(eligible), len(schedule))).argsort(axis=1)[:, :per_source], axis=1)
        increments = schedule[picks] * rng.choice([-1.0, 1.0], size=(len(eligible), per_source))
        for view in range(per_source):
            order = rng.permutation(len(eligible))
            jobs.extend((int(eligible[i]), float(increments[i, view])) for i in order)
    return jobs[:count]


def synthesize_sample(
    base: BaseSample,
    item: SourceItem,
    yaw_increment_deg: float,
    key: str,
    config: SynthesisConfig | None = None,
) -> SampleRecord:
    """One synthetic sample: the source face turned further by `yaw_increment_deg`.

    Args:
        base: the source in its image frame (`r3fa.readers.load_source_sample`).
        item: the source's files (its key becomes `parent_key`).
        yaw_increment_deg: wanted |yaw| increase (its sign picks the direction of a near-frontal face).
        key: the new sample's key (no dots).
        config: thresholds and output size; default `SynthesisConfig(count=1)`'s.

    Returns:
        The record: a 120x120 crop around the new face, its label in `DATASET_CONVENTION` (same shape and
        expression, new pose), the label's 68 landmarks, `synthetic=True`, `parent_key=item.key` and the
        signed yaw change actually applied.

    Raises:
        BadInputError: `(item.image_path, "profiling: <reason>")` when the view is rejected.
        ValueError: a key with dots, or a base decoded at half size (`r3fa.readers.SourceRead.image_step`).
    """
    if "." in key:
        raise ValueError(f"sample keys must not contain dots: {key!r}")
    if base.image_step != 1:  # a build decodes at half size only the images that have no profiling view
        raise ValueError(f"face profiling needs the full-size image of {item.key}, not one decoded at half size")
    config = config or SynthesisConfig(count=1)
    try:
        face = profile_face(
            base.image, base.image_affine, base.shape, base.exp, yaw_increment_deg, config.pitch_increment_deg,
            config.output_size,
        )
    except (ValueError, np.linalg.LinAlgError, RuntimeError) as err:  # scipy's QhullError is a RuntimeError
        raise BadInputError(item.image_path, f"profiling: mesh failed ({type(err).__name__})") from None
    if face.yaw_increment == 0.0:
        raise BadInputError(item.image_path, f"profiling: |yaw| {abs(base.pose_deg[1]):.1f} cannot increase")
    if face.hole_fraction > config.max_hole_fraction:
        raise BadInputError(
            item.image_path,
            f"profiling: holes in the face {face.hole_fraction:.3f} > {config.max_hole_fraction} "
            f"(yaw increment {face.yaw_increment:+.1f})",
        )
    return SampleRecord(
        key=key,
        source=item.source,
        subject_id=item.subject_id,
        image_path=item.image_path,
        crop=face.crop,
        roi=face.roi,
        params=face.params,
        landmarks=face.landmarks,
        pose_deg=pose_degrees(face.params).astype(np.float32),
        label_nme=base.label_nme,
        parent_key=item.key,
        synthetic=True,
        fitted=base.fitted,
        yaw_increment=face.yaw_increment,
        augment=(
            {
                "op": STAGE,
                "yaw_increment": face.yaw_increment,
                "pitch_increment": config.pitch_increment_deg,
                "hole_fraction": face.hole_fraction,
            },
        ),
    )
