"""The shard-set contract: what the builder writes and every reader of a shard set relies on, defined once.

A shard set is read by the builder itself (resume), both training loaders, training, pose-balanced sampling,
`r3fa shards verify` and `inspect`, the experiments and the retrain-and-eval flow. They agree on three things,
all defined here and nowhere else:

- the **members of a sample** in a tar: `KEY.jpg` (a 120x120 BGR JPEG crop), `KEY.params.f32` (62 and
  `KEY.lms.f32` 136 raw little-endian float32) and `KEY.json` (a summary that repeats the Parquet row);
- the **pixel normalisation** of the references: BGR, `(x - 127.5) / 128` (`normalise_pixels`; DALI's
  `crop_mirror_normalize` takes the two constants);
- **`manifest.json`**: `ShardSetManifest`, a pydantic model with its version. The builder writes it through the
  model (`manifest_json`), every reader loads it with `load_manifest` and uses attributes, and
  `schemas/manifest.schema.json` is generated from it (`manifest_schema`; a test keeps the file equal). Unknown
  fields are refused (`extra="forbid"`), numbers are strict (no "3" for 3, no 3.0 for a count) and the
  whitening must be finite, so a hand-edited or foreign file fails loudly instead of being half-read. The
  mix config is kept as the builder's resolved JSON object: its model (`pipelines.mix.MixConfig`) lives above
  the library.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from r3fa.crop import CROP_SIZE, CropConvention
from r3fa.errors import UserError
from r3fa.metrics import BIN_NAMES
from r3fa.params import PARAM_DIM, Whitening
from r3fa.paths import PROJECT_ROOT

# --- the members of a sample ---------------------------------------------------------------------------------
IMAGE_EXT = "jpg"
PARAMS_EXT = "params.f32"
LANDMARKS_EXT = "lms.f32"
META_EXT = "json"
SAMPLE_MEMBERS = (IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT, META_EXT)
IMAGE_SIZE = CROP_SIZE  # the JPEG is a square crop of this side
PARAMS_DIM = PARAM_DIM
LANDMARKS_DIM = 136  # (2, 68) crop-frame pixels, flattened x0..x67, y0..y67
LABEL_DTYPE = "<f4"
LABEL_DIMS = {PARAMS_EXT: PARAMS_DIM, LANDMARKS_EXT: LANDMARKS_DIM}
LABEL_BYTES = {ext: 4 * dim for ext, dim in LABEL_DIMS.items()}


def label_bytes(ext: str, values: np.ndarray) -> bytes:
    """The bytes of the label member `ext` (`PARAMS_EXT` or `LANDMARKS_EXT`): little-endian float32."""
    return np.asarray(values, LABEL_DTYPE).reshape(LABEL_DIMS[ext]).tobytes()


def read_label(ext: str, data: bytes) -> np.ndarray:
    """A label member's bytes as float32 `(dim,)` (a read-only view of `data`).

    Raises:
        ValueError: `data` does not have the member's size.
    """
    if len(data) != LABEL_BYTES[ext]:
        raise ValueError(f"{ext} member has {len(data)} bytes, expected {LABEL_BYTES[ext]}")
    return np.frombuffer(data, LABEL_DTYPE)


# --- pixel normalisation -------------------------------------------------------------------------------------
PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0


def normalise_pixels(x: Any) -> Any:
    """BGR pixel values in [0, 255] (a float numpy array or torch tensor, any layout) -> `(x - 127.5) / 128`."""
    return (x - PIXEL_MEAN) / PIXEL_SCALE


# --- manifest.json -------------------------------------------------------------------------------------------
MANIFEST_VERSION = 2
MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_PATH = PROJECT_ROOT / "schemas" / "manifest.schema.json"  # generated: `manifest_schema()`
REJECTED_FILE = "rejections/rejected.parquet"  # DIR/*.parquet is exactly the sample tables
SHARD_NAME_PATTERN = r"^[A-Za-z0-9_-]+-(train|val)-[0-9]{6}"

Count = Annotated[int, Field(ge=0, strict=True)]
Sha256 = Annotated[str, Field(pattern="^[0-9a-f]{64}$", strict=True)]
Vector62 = Annotated[
    list[Annotated[float, Field(strict=True, allow_inf_nan=False)]], Field(min_length=PARAMS_DIM, max_length=PARAMS_DIM)
]
Split = Literal["train", "val"]
_CONFIG_KEYS = ("name", "sources", "seed")  # what any resolved mix config has
YawBin = Literal[BIN_NAMES]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceInputs(_Part):
    """One source's inputs: discovered = accepted (a sample in the set) + rejected (set aside while
    discovering, or no candidate made) + surplus (candidates made, all cut by the target counts)."""

    inputs: Count
    accepted: Count
    rejected: Count
    surplus: Count


class Inputs(_Part):
    """What went in: a hash of every input file's metadata (`pipelines.manifest.inputs_hash`) and counts."""

    method: str
    sha256: Sha256
    files: Count
    items: Count
    items_by_source: dict[str, Count]
    by_source: dict[str, SourceInputs]


class WhiteningStats(_Part):
    """The training split's label statistics (`r3fa.params.Whitening.to_dict`)."""

    name: str
    mean: Vector62
    std: Vector62

    def to_whitening(self) -> Whitening:
        """As the `Whitening` training and the checkpoint use."""
        return Whitening.from_dict(self.model_dump())


class StageTotals(_Part):
    """Candidates of one source and stage: planned = delivered + rejected + surplus."""

    planned: Count
    delivered: Count
    rejected: Count
    surplus: Count


class StageCounts(StageTotals):
    """Candidates of one stage ("real", "synthetic"), with its target (None: deliver what is made)."""

    target: Count | None


class SplitCounts(_Part):
    """Samples per split."""

    train: Count
    val: Count


class Counts(_Part):
    """What came out, counted from the shards' Parquet tables and the cut."""

    samples: Count
    planned: Count = Field(description="candidates planned + inputs set aside while discovering (= samples + rejected + surplus)")
    rejected: Count = Field(description="rows of rejections/rejected.parquet")
    surplus: Count = Field(description="candidates made but cut by the target counts (not rejections)")
    synthetic: Count
    by_stage: dict[str, StageCounts]
    by_source_stage: dict[str, StageTotals] = Field(description="per 'source/real' and 'source/synthetic'")
    by_split: SplitCounts
    by_source: dict[str, Count]
    by_yaw_bin: dict[YawBin, Count] = Field(json_schema_extra={"required": list(BIN_NAMES)})
    by_split_yaw_bin: dict[str, Count] = Field(description="per 'split/bin'")

    @field_validator("by_yaw_bin")
    @classmethod
    def _every_bin(cls, value: dict[str, int]) -> dict[str, int]:
        if set(value) != set(BIN_NAMES):
            raise ValueError(f"needs exactly the bins {', '.join(BIN_NAMES)}")
        return value


class ShardEntry(_Part):
    """One shard: its tar, DALI index and Parquet table (names relative to the set's folder) and hashes."""

    file: Annotated[str, Field(pattern=SHARD_NAME_PATTERN + r"\.tar$")]
    split: Split
    count: Count
    sha256: Sha256
    idx: Annotated[str, Field(pattern=SHARD_NAME_PATTERN + r"\.idx$")]
    parquet: Annotated[str, Field(pattern=SHARD_NAME_PATTERN + r"\.parquet$")]
    parquet_sha256: Sha256
    parquet_bytes: Count


class ShardSetManifest(_Part):
    """`manifest.json` of a shard set: what went in, what came out, and the training split's whitening."""

    model_config = ConfigDict(title=f"r3fa shard-set manifest.json (manifest_version {MANIFEST_VERSION})")

    manifest_version: Literal[MANIFEST_VERSION]
    name: Annotated[str, Field(pattern="^[A-Za-z0-9_-]+$")]
    code_version: Annotated[str, Field(min_length=1, description="r3fa version + git commit (+ -dirty), or $R3FA_CODE_VERSION")]
    crop_convention: CropConvention
    sample_schema_version: Annotated[int, Field(ge=1, strict=True, description="version of schemas/samples.schema.json")]
    config: dict[str, Any] = Field(
        description="the resolved mix config (pipelines.mix.MixConfig)", json_schema_extra={"required": list(_CONFIG_KEYS)}
    )
    inputs: Inputs
    whitening: WhiteningStats
    counts: Counts
    rejected_file: Literal[REJECTED_FILE]
    rejected_sha256: Sha256
    shards: list[ShardEntry]

    @field_validator("config")
    @classmethod
    def _a_mix(cls, value: dict[str, Any]) -> dict[str, Any]:
        missing = [key for key in _CONFIG_KEYS if key not in value]
        if missing:
            raise ValueError(f"not a resolved mix config (no {', '.join(missing)})")
        return value

    def split_shards(self, split: str) -> list[ShardEntry]:
        """The shards of `split` that hold samples, in manifest order (the global sample index's order)."""
        return [entry for entry in self.shards if entry.split == split and entry.count]

    def identity(self) -> str:
        """sha256 of the canonical JSON without `code_version`: the manifest names every shard with its sha256,
        the inputs and the config, so this identifies the data, and a rebuild by a newer commit that skipped
        every complete shard keeps it (a training run on those shards can still resume)."""
        content = self.model_dump(mode="json", exclude={"code_version"})
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def manifest_json(manifest: ShardSetManifest) -> bytes:
    """The file's bytes: sorted keys and a fixed indent, so equal manifests are equal bytes."""
    return (json.dumps(manifest.model_dump(mode="json"), indent=1, sort_keys=True) + "\n").encode()


def manifest_schema() -> dict:
    """The JSON schema of `manifest.json` (what `schemas/manifest.schema.json` holds)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "r3fa/manifest.schema.json",
        **ShardSetManifest.model_json_schema(),
    }


class ManifestError(UserError):
    """A `manifest.json` that is missing, unreadable, of another version or not a valid manifest.

    The message is one line; `problems` lists every problem found, one line each (`r3fa shards verify` reports
    them all)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


def load_manifest(folder_or_file: str | Path) -> ShardSetManifest:
    """The manifest of a shard set.

    Args:
        folder_or_file: the shard set's folder, or its `manifest.json`.

    Raises:
        ManifestError: (a `UserError`) no manifest (not a shard set, or a build that did not finish), one that
            cannot be read or is not JSON, one of another `manifest_version` (rebuild the set), or one that
            breaks the model (the message names the first field; `problems` lists them all).
    """
    given = Path(folder_or_file)
    path = given / MANIFEST_FILE if given.is_dir() or given.suffix != ".json" else given
    if not path.is_file():
        raise ManifestError(
            f"{path.parent}: not a shard set (no {MANIFEST_FILE}, or its build did not finish); "
            "build it with `r3fa shards build`"
        )
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ManifestError(f"{path}: not a readable manifest ({type(err).__name__}: {err}); rebuild the shard set") from None
    version = data.get("manifest_version") if isinstance(data, dict) else None
    if version != MANIFEST_VERSION:
        raise ManifestError(
            f"{path}: manifest_version {version}, this r3fa reads version {MANIFEST_VERSION}; rebuild the shard set "
            "with `r3fa shards build`"
        )
    try:
        return ShardSetManifest.model_validate(data)
    except ValidationError as err:
        problems = [f"{path}: {_field(e['loc'])}: {e['msg'][:200]}" for e in err.errors()]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ManifestError(
            f"{problems[0]}{more}; not a valid shard-set manifest, run `r3fa shards verify {path.parent}` or rebuild",
            problems,
        ) from None
