"""The canonical sample record that flows from readers through augmentation and synthesis to the shards.

One record = one 120x120 training sample: the crop, its 62-d crop-frame label (convention in
`crop_convention`), its 68 crop-frame landmarks, and where it came from. Landmarks are `(2, 68)` float32;
flattened for storage as `landmarks.reshape(-1)` = x0..x67, y0..y67 (136 values).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from r3fa.crop import CropConvention
from r3fa.io import BadInputError, error_name

DATASET_CONVENTION = CropConvention.V1  # labels in every shard set are in this crop convention


@dataclass(frozen=True)
class SampleRecord:
    key: str  # unique within a dataset, no dots (WebDataset/DALI keys)
    source: str  # e.g. "300wlp/AFW", "aflw2000_3d"
    subject_id: str  # identity grouping: splits never put one subject in two splits
    image_path: str  # the original file
    crop: np.ndarray  # (120, 120, 3) uint8 BGR
    roi: np.ndarray  # (4,) [sx, sy, ex, ey] in the original image
    params: np.ndarray  # (62,) float32, crop frame, DATASET_CONVENTION
    landmarks: np.ndarray  # (2, 68) float32 crop-frame pixels
    pose_deg: np.ndarray  # (3,) pitch, yaw, roll in degrees
    label_nme: float  # NME of the label's landmarks against the annotation's own, in percent
    parent_key: str = ""  # the record this one was derived from ("" for originals)
    synthetic: bool = False
    yaw_increment: float = 0.0  # degrees added by face profiling (0 for real samples)
    augment: tuple[dict, ...] = field(default_factory=tuple)  # applied ops with their parameters, in order
    fitted: bool = False  # label fitted to 2D landmarks (r3fa.landmarks68), not a 3DMM annotation

    def derived(self, **changes) -> "SampleRecord":
        """A copy with some fields changed (parent_key defaults to this record's key): `dataclasses.replace`,
        without running `__init__` again (a record has no `__post_init__`), at a fifth of its cost (a build
        derives every augmented copy)."""
        changes.setdefault("parent_key", self.key)
        unknown = changes.keys() - _RECORD_FIELDS
        if unknown:
            raise TypeError(f"SampleRecord has no field {sorted(unknown)[0]!r}")
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, **changes)
        return copy


_RECORD_FIELDS = frozenset(record_field.name for record_field in fields(SampleRecord))


@dataclass(frozen=True)
class Rejection:
    """An input (or one planned sample of it) set aside, with why.

    Attributes:
        path: the input file at fault.
        reason: why, in words (`r3fa.io.BadInputError` wording, a check's finding, or the exception message).
        stage: where: "discover" (the file listing), "ingest", "augment", "synthesis", "label", "encode".
        error: the exception class behind it (`r3fa.io.error_name`); "" when a check decided, not an exception.
        key: the sample (or source item) key it was planned under; "" when there is none.
        source: the source name of the item ("aflw2000_3d", "300wlp/AFW", ...); "" when not known.
    """

    path: str
    reason: str
    stage: str = "ingest"
    error: str = ""
    key: str = ""
    source: str = ""


def rejection_of(err: Exception, path: str, stage: str) -> Rejection:
    """The rejection of one sample whose stage raised `err`: a `BadInputError` keeps its own path, reason and
    error class; any other exception (a decoder's, a linear-algebra routine's, the filesystem's) is charged to
    `path` with its class name and first message line as the reason."""
    if isinstance(err, BadInputError):
        return Rejection(err.path, err.reason, stage, err.error)
    message = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    reason = f"{error_name(err)}: {message}" if message else error_name(err)
    return Rejection(path, reason, stage, error_name(err))
