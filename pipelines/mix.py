"""The mix config: which sources, how they are augmented and synthesised, split and cut into shards.

A YAML file under `configs/mix/` (`paper-680k.yaml`, `demo.yaml`, `test.yaml`) validated by `MixConfig`.
Everything that changes the bytes of a shard set is here, so a config and its seed fix the dataset.
The optional `synthesis:` section belongs to the face-profiling stage (`pipelines.synthesis_stage`); it is
validated by that stage's `SynthesisConfig`, imported only when the section is present.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from r3fa.augment import AugmentPolicy
from r3fa.config import load_config
from r3fa.io import MAX_IMAGE_PIXELS
from r3fa.paths import data_root

if TYPE_CHECKING:
    from pipelines.synthesis_stage import SynthesisConfig

MB = 1_000_000
MAX_COPIES_PER_IMAGE = 1000  # records per source image; more is a typo, not a dataset


class SourceConfig(BaseModel):
    """One labelled source of real samples.

    Attributes:
        kind: "300wlp" (the 300W-LP tree, `r3fa.readers.iter_300wlp`), "aflw2000_3d"
            (`r3fa.readers.iter_aflw2000`) or "landmarks68" (images with 68 2D landmarks, labels fitted:
            `r3fa.landmarks68`).
        root: folder, relative to the reference-data root (`r3fa.paths.data_root`) unless absolute.
        fold: with `n_folds`, only this fold of AFLW2000-3D (`r3fa.folds`).
        n_folds: number of folds.
        limit: the first `limit` items only (sorted order), for small builds.
        points: landmarks68 only: an `.npy` (N, 2, 68) of points in sorted image order (same root rule);
            default a landmark file beside each image.
        style: landmarks68 only: "2d" (jaw on the visible outline: landmark marching) or "3d".
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["300wlp", "aflw2000_3d", "landmarks68"]
    root: Path
    fold: int | None = Field(None, ge=0)
    n_folds: int = Field(2, ge=2)
    limit: int | None = Field(None, ge=1)
    points: Path | None = None
    style: Literal["2d", "3d"] = "2d"

    def resolved_root(self) -> Path:
        """The source folder as an absolute path."""
        return self.root if self.root.is_absolute() else data_root() / self.root

    def resolved_points(self) -> Path | None:
        """The landmarks68 points array as an absolute path, or None."""
        if self.points is None:
            return None
        return self.points if self.points.is_absolute() else data_root() / self.points

    @model_validator(mode="after")
    def _fold_needs_aflw(self) -> "SourceConfig":
        if self.fold is not None and self.kind != "aflw2000_3d":
            raise ValueError("fold/n_folds select a part of AFLW2000-3D only")
        if self.fold is not None and self.fold >= self.n_folds:
            raise ValueError(f"fold {self.fold} out of range for {self.n_folds} folds")
        if self.points is not None and self.kind != "landmarks68":
            raise ValueError("points: a points array belongs to a landmarks68 source only")
        return self


class Targets(BaseModel):
    """Exact sample counts a mix delivers (`None`: every planned candidate of that stage that is accepted).

    Attributes:
        real: samples of the augment stage (plain crops and augmented copies of the sources).
        synthetic: samples of the synthesis stage (face-profiling views); needs a `synthesis:` section.
    """

    model_config = ConfigDict(extra="forbid")

    real: int | None = Field(None, ge=1)
    synthetic: int | None = Field(None, ge=0)


class MixConfig(BaseModel):
    """A shard set: sources, augmentation, synthesis, split, shard size, rejection threshold, seed.

    Attributes:
        name: prefix of every shard file (`{name}-{split}-{NNNNNN}.tar`); letters, digits, '_' and '-'.
        sources: the real samples.
        augmentation: `r3fa.augment.AugmentPolicy` (`copies_per_image: 1` = plain crops only).
        synthesis: the face-profiling section (`pipelines.synthesis_stage.SynthesisConfig`), or none.
        seed: fixes copy counts, augmentations, synthesis jobs and the global shuffle.
        val_fraction: share of *subjects* in the val split (a hash of `subject_id`; never both splits).
        shard_size_mb: target tar size; with `sample_bytes` it fixes `samples_per_shard` before any image is
            read, so the plan does not depend on the images' JPEG sizes.
        sample_bytes: expected bytes of one sample in a tar (JPEG + labels + json + tar headers).
        samples_per_shard: overrides the size-based count (small test builds).
        max_label_nme: samples whose label NME (percent) exceeds this are rejected (stage "label").
        refit: refit the 50 coefficients to the annotation landmarks (`r3fa.readers.load_source_sample`).
        jpeg_quality: quality of the stored JPEG crops.
        max_image_pixels: an image declaring more pixels in its header is rejected without being decoded
            (decompression bombs); the default is 200 times a 450x450 300W-LP image.
        half_size_decode: decode a source JPEG at half size (libjpeg's scaled decoding, ~0.45x the time)
            when none of its crops samples it more finely than every second pixel and it has no face-profiling
            view (`pipelines.samples.ingest`); such crops differ from the full decode's by 1.75 grey levels on
            average, are closer to an anti-aliased crop and no worse for a network (docs/usage-shards.md).
            False: every image at full size.
        max_reject_fraction: the build fails, with one line per source, when more than this share of a
            source's inputs is rejected (instead of producing a mostly empty set).
        targets: exact counts per stage (`Targets`); a stage without a target delivers what it makes.
            Without `targets.synthetic` the synthesis stage plans `synthesis.count` views and delivers those
            accepted (the behaviour of configs written before targets existed).
        reserve_fraction: extra candidates planned per targeted stage (`ceil(target * (1 + fraction))`),
            to replace rejections; the build keeps the first `target` accepted in a fixed candidate order
            and counts the rest as surplus.
        target_tolerance: the build fails (`pipelines.cut.ShortfallError`, with the rejection reasons) when
            a stage delivers fewer than `(1 - target_tolerance) * target` samples.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    sources: list[SourceConfig] = Field(min_length=1)
    augmentation: AugmentPolicy = AugmentPolicy()
    synthesis: dict | None = None
    seed: int = Field(0, ge=0)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    shard_size_mb: float = Field(256.0, gt=0)
    sample_bytes: int = Field(12_000, gt=0)
    samples_per_shard: int | None = Field(None, ge=1)
    max_label_nme: float = Field(5.0, gt=0)
    refit: bool = False
    jpeg_quality: int = Field(95, ge=1, le=100)
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1)
    half_size_decode: bool = True
    max_reject_fraction: float = Field(0.2, ge=0.0, le=1.0)
    targets: Targets = Targets()
    reserve_fraction: float = Field(0.0, ge=0.0, le=10.0)
    target_tolerance: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_synthesis(self) -> "MixConfig":
        self.synthesis_config()
        return self

    @model_validator(mode="after")
    def _check_copies(self) -> "MixConfig":
        copies = self.augmentation.copies_per_image
        if not copies <= MAX_COPIES_PER_IMAGE:  # also refuses .inf and .nan
            raise ValueError(f"augmentation.copies_per_image must be a number from 1 to {MAX_COPIES_PER_IMAGE}")
        return self

    @model_validator(mode="after")
    def _check_targets(self) -> "MixConfig":
        if self.targets.synthetic and self.synthesis is None:
            raise ValueError("targets.synthetic needs a synthesis: section (the face-profiling stage)")
        return self

    def stage_targets(self) -> dict[str, int | None]:
        """The target per stage ("augment", "synthesis"); None where the stage delivers what it makes."""
        return {"augment": self.targets.real, "synthesis": self.targets.synthetic}

    def synthesis_config(self) -> "SynthesisConfig | None":
        """The validated `synthesis:` section (imports the face-profiling stage only when there is one)."""
        if self.synthesis is None:
            return None
        from pipelines.synthesis_stage import SynthesisConfig

        return SynthesisConfig.model_validate(self.synthesis)

    def shard_samples(self) -> int:
        """Samples per shard: `samples_per_shard`, else the target size over the expected sample size."""
        if self.samples_per_shard is not None:
            return self.samples_per_shard
        return max(1, int(self.shard_size_mb * MB // self.sample_bytes))


def load_mix(path: str | Path) -> MixConfig:
    """Read and validate a mix config YAML."""
    return load_config(path, MixConfig)
