"""Label-consistent, seeded augmentation of real samples into extra 120x120 training records.

The paper grows 122,450 300W-LP images into 430k real samples (about 3.5 per image). Each augmented copy is
made from the *original* image, never from a crop:

- geometric ops (horizontal flip, in-plane rotation, roi scale/shift jitter) are composed into one 2x3
  affine from the original image to the crop (`r3fa.readers.CropTransform`); the image is warped once (no
  black borders from re-warping a crop) and the 62-d label is carried through the same affine
  (`r3fa.readers.crop_labels`: the affine composes into the pose rows, depth scales with the 2D scale; a
  flip mirrors the pose, permutes the landmarks with the iBUG symmetry and refits the coefficients to the
  mirrored shape, `r3fa.landmark_symmetry`);
- photometric ops (colour jitter, occlusion by a rectangle, blur, noise, JPEG re-encoding) then act on
  the crop and leave the label alone.

Every applied op is recorded with its drawn parameters in `SampleRecord.augment`, in the order applied.
All randomness comes from the `np.random.Generator` passed in, so the same policy and seed give a
byte-identical crop and label; `copy_rng` derives that generator from a run seed, the item key and the
copy index, independent of processing order. `copies_for` turns a fractional `copies_per_image` into a
whole number per image by a seeded hash of the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from r3fa.crop import CROP_SIZE
from r3fa.readers import BaseSample, CropTransform, SourceItem, make_records, roi_crop_matrices
from r3fa.records import SampleRecord
from r3fa.seeding import default_rngs

_CENTRE = (CROP_SIZE - 1) / 2.0  # centre of the crop's pixel grid: a flip about it is cv2.flip


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    p: float = Field(0.5, ge=0, le=1, description="probability that the op is applied")


class FlipOp(_Op):
    """Horizontal flip (mirror image, mirrored label)."""


class RotateOp(_Op):
    """In-plane rotation about the crop centre by an angle uniform in [-max_deg, max_deg]."""

    max_deg: float = Field(30.0, ge=0, le=180)


class RoiJitterOp(_Op):
    """The roi's side scaled by a factor uniform in `scale`, its centre shifted by up to `shift` x side."""

    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = Field(0.06, ge=0, le=0.5)


class ColorOp(_Op):
    """Saturation, contrast (factors, uniform in their ranges) and brightness (offset uniform in +-brightness)."""

    brightness: float = Field(32.0, ge=0)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.6, 1.4)


class OcclusionOp(_Op):
    """A rectangle of one random colour; its sides are fractions of the crop side uniform in `size`."""

    p: float = Field(0.2, ge=0, le=1)
    size: tuple[float, float] = (0.15, 0.45)


class BlurOp(_Op):
    """Gaussian blur with sigma (pixels) uniform in `sigma`."""

    p: float = Field(0.2, ge=0, le=1)
    sigma: tuple[float, float] = (0.5, 1.5)


class NoiseOp(_Op):
    """Additive Gaussian noise per pixel and channel, standard deviation uniform in `std` (grey levels)."""

    p: float = Field(0.2, ge=0, le=1)
    std: tuple[float, float] = (2.0, 8.0)


class JpegOp(_Op):
    """JPEG re-encoding at a quality drawn uniformly from the integers in `quality`."""

    p: float = Field(0.3, ge=0, le=1)
    quality: tuple[int, int] = (30, 90)


class AugmentPolicy(BaseModel):
    """Which augmentations a dataset build applies, how often and how strongly.

    `copies_per_image` is the mean number of records per source image, copy 0 included; the default 3.512
    makes the paper's 430k records from 122,450 300W-LP images. `include_original`: copy 0 is the
    un-augmented crop. Ops are drawn independently; a copy in which no op fires is the plain crop again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    copies_per_image: float = Field(3.512, ge=1)
    include_original: bool = True
    flip: FlipOp = FlipOp()
    rotate: RotateOp = RotateOp()
    roi_jitter: RoiJitterOp = RoiJitterOp()
    color: ColorOp = ColorOp()
    occlusion: OcclusionOp = OcclusionOp()
    blur: BlurOp = BlurOp()
    noise: NoiseOp = NoiseOp()
    jpeg: JpegOp = JpegOp()


# ----------------------------------------------------------------------------- seeding and copy counts
def _hash64(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def copies_for(key: str, policy: AugmentPolicy, seed: int) -> int:
    """How many records (copy 0 included) the source item `key` gets: floor(copies_per_image), plus one
    more when a seeded hash of the key, as a uniform number in [0, 1), falls below the fractional part."""
    whole = int(np.floor(policy.copies_per_image))
    extra = _hash64(seed, key) / 2.0**64 < policy.copies_per_image - whole
    return whole + int(extra)


def copy_rng(seed: int, key: str, copy_index: int) -> np.random.Generator:
    """The generator for one copy, fixed by the run seed, the item key and the copy index."""
    return np.random.default_rng([seed, _hash64(key), copy_index])


def copy_rngs(seed: int, copies: Sequence[tuple[str, int]]) -> list[np.random.Generator]:
    """`copy_rng` of many copies, each (item key, copy index): the same generators, seeded together
    (`r3fa.seeding.default_rngs`, a quarter of the cost; a build seeds a batch's copies at once)."""
    hashes = {key: _hash64(key) for key, _ in copies}
    return default_rngs([(seed, hashes[key], copy_index) for key, copy_index in copies])


# ----------------------------------------------------------------------------- geometric ops
def _about_centre(linear: np.ndarray, offset: np.ndarray | tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Crop-frame maps x -> linear (x - c) + c + offset, c the crop centre: `(..., 3, 3)` of `linear`
    `(..., 2, 2)` and `offset` `(..., 2)`."""
    centre = np.full(2, _CENTRE)
    out = np.zeros((*np.shape(linear)[:-2], 3, 3))
    out[..., 2, 2] = 1.0
    out[..., :2, :2] = linear
    out[..., :2, 2] = centre - linear @ centre + np.asarray(offset)
    return out


def _draw_geometry(policy: AugmentPolicy, rng: np.random.Generator) -> list[dict]:
    """Draw the geometric ops (roi jitter, rotation, flip, each by its probability) and their parameters."""
    ops: list[dict] = []
    if rng.random() < policy.roi_jitter.p:
        scale = float(rng.uniform(*policy.roi_jitter.scale))
        shift = rng.uniform(-policy.roi_jitter.shift, policy.roi_jitter.shift, size=2)
        ops.append({"name": "roi_jitter", "scale": scale, "shift": [float(s) for s in shift]})
    if rng.random() < policy.rotate.p:
        ops.append({"name": "rotate", "degrees": float(rng.uniform(-policy.rotate.max_deg, policy.rotate.max_deg))})
    if rng.random() < policy.flip.p:
        ops.append({"name": "flip"})
    return ops


def geometric_map(ops: Sequence[dict]) -> np.ndarray:
    """The crop-frame 3x3 map (applied after the roi crop) of the geometric ops in a log, in order;
    photometric entries are ignored. Replays a record's `augment` as well as fresh draws (`geometric_maps`
    of one log)."""
    return geometric_maps([ops])[0]


def geometric_maps(logs: Sequence[Sequence[dict]]) -> np.ndarray:
    """`geometric_map` of many op logs, `(n, 3, 3)`: the k-th geometric op of every log is made and applied
    for all the logs that have one of its kind in one vectorised pass. A map is multiplied by its own ops
    only, so it has the same bits as when made alone (a build makes the copies of a batch together)."""
    geometric = [[op for op in log if op["name"] in _GEOMETRIC_OPS] for log in logs]
    rows: dict[tuple[int, str], list[int]] = {}  # (position in the log, kind of op) -> the logs that have it
    for i, ops in enumerate(geometric):
        for step, op in enumerate(ops):
            rows.setdefault((step, op["name"]), []).append(i)
    total = np.tile(np.eye(3), (len(logs), 1, 1))
    for step, name in sorted(rows, key=lambda position: position[0]):  # a step's kinds act on different logs
        chosen = rows[step, name]
        total[chosen] = _GEOMETRIC_OPS[name]([geometric[i][step] for i in chosen]) @ total[chosen]
    return total


def _roi_jitter_maps(ops: Sequence[dict]) -> np.ndarray:
    """A roi `scale` times larger, centred `shift` x side away: content shrinks by 1/scale about the new centre."""
    scale = np.array([op["scale"] for op in ops], np.float64)
    shift = np.array([op["shift"] for op in ops], np.float64) * CROP_SIZE / scale[:, None]
    return _about_centre(np.eye(2) / scale[:, None, None], -shift)


def _rotate_maps(ops: Sequence[dict]) -> np.ndarray:
    radians = np.radians(np.array([op["degrees"] for op in ops], np.float64))
    c, s = np.cos(radians), np.sin(radians)
    return _about_centre(np.stack([c, -s, s, c], axis=-1).reshape(-1, 2, 2))


def _flip_maps(ops: Sequence[dict]) -> np.ndarray:
    return np.tile(flip_map(), (len(ops), 1, 1))


_GEOMETRIC_OPS = {"roi_jitter": _roi_jitter_maps, "rotate": _rotate_maps, "flip": _flip_maps}


def geometric_transform(base: BaseSample, crop_map: np.ndarray) -> CropTransform:
    """The image -> crop transform of `base.roi`'s crop followed by a crop-frame 3x3 map."""
    return geometric_transforms(base.roi[None], crop_map[None])[0]


def geometric_transforms(rois: np.ndarray, crop_maps: np.ndarray) -> list[CropTransform]:
    """The transforms of the crops of rois `(n, 4)` each followed by its map (`(n, 3, 3)`), in one vectorised
    pass (the same bits as `geometric_transform` of each)."""
    roi_crops = np.tile(np.eye(3), (len(rois), 1, 1))
    roi_crops[:, :2] = roi_crop_matrices(rois)
    return [CropTransform(matrix[:2]) for matrix in crop_maps @ roi_crops]


def flip_map() -> np.ndarray:
    """The crop-frame 3x3 map of a horizontal flip (x -> 119 - x)."""
    return _about_centre(np.diag([-1.0, 1.0]))


# ----------------------------------------------------------------------------- photometric ops
_GREY_WEIGHTS = np.array([0.114, 0.587, 0.299])  # BGR -> grey, as cv2.COLOR_BGR2GRAY


def _color(crop: np.ndarray, op: ColorOp, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Saturation about the pixel's grey, then contrast about the mean grey, then brightness: one 3x4 colour
    matrix applied by `cv2.transform` (rounded and saturated to uint8)."""
    saturation, contrast = float(rng.uniform(*op.saturation)), float(rng.uniform(*op.contrast))
    brightness = float(rng.uniform(-op.brightness, op.brightness))
    mean_grey = float(_GREY_WEIGHTS @ np.asarray(cv2.mean(crop)[:3]))
    matrix = np.empty((3, 4))
    matrix[:, :3] = contrast * (1.0 - saturation) * _GREY_WEIGHTS + contrast * saturation * np.eye(3)
    matrix[:, 3] = (1.0 - contrast) * mean_grey + brightness
    record = {"name": "color", "saturation": saturation, "contrast": contrast, "brightness": brightness}
    return cv2.transform(crop, matrix), record


def _occlusion(crop: np.ndarray, op: OcclusionOp, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    w, h = (int(round(f * CROP_SIZE)) for f in rng.uniform(*op.size, size=2))
    x0, y0 = int(rng.integers(0, CROP_SIZE - w + 1)), int(rng.integers(0, CROP_SIZE - h + 1))
    colour = [int(v) for v in rng.integers(0, 256, size=3)]
    out = crop.copy()
    out[y0 : y0 + h, x0 : x0 + w] = colour
    return out, {"name": "occlusion", "box": [x0, y0, x0 + w, y0 + h], "colour": colour}


def _blur(crop: np.ndarray, op: BlurOp, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A Gaussian kernel of the size `cv2.GaussianBlur` picks for 8-bit images (the odd number nearest 6 sigma
    + 1), applied in floating point by `cv2.sepFilter2D`: `GaussianBlur` takes a bit-exact fixed-point path that
    is 2-3x slower on a 120x120 crop; the two differ by at most 1 grey level."""
    sigma = float(rng.uniform(*op.sigma))
    kernel = cv2.getGaussianKernel(round(6 * sigma + 1) | 1, sigma)
    return cv2.sepFilter2D(crop, -1, kernel, kernel), {"name": "blur", "sigma": sigma}


def _noise(crop: np.ndarray, op: NoiseOp, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Gaussian noise drawn by OpenCV's generator seeded from `rng` (a third of numpy's cost for 43k draws),
    rounded to integers and added with saturation (the same as rounding the noisy image: the crop is integer).
    OpenCV keeps one default generator per thread, so seeding it just before the draw is safe in threaded workers."""
    std = float(rng.uniform(*op.std))
    cv2.setRNGSeed(int(rng.integers(2**31)))
    noise = np.empty(crop.shape, np.int16)
    cv2.randn(noise, (0.0,) * crop.shape[2], (std,) * crop.shape[2])
    return cv2.add(crop, noise, dtype=cv2.CV_8U), {"name": "noise", "std": std}


def _jpeg(crop: np.ndarray, op: JpegOp, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    quality = int(rng.integers(op.quality[0], op.quality[1] + 1))
    _, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR), {"name": "jpeg", "quality": quality}


_PHOTOMETRIC = (("color", _color), ("occlusion", _occlusion), ("blur", _blur), ("noise", _noise), ("jpeg", _jpeg))


def _photometric(crop: np.ndarray, policy: AugmentPolicy, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """The crop after the drawn photometric ops (in `_PHOTOMETRIC` order), and their log."""
    ops = []
    for name, apply in _PHOTOMETRIC:
        op = getattr(policy, name)
        if rng.random() < op.p:
            crop, record = apply(crop, op, rng)
            ops.append(record)
    return crop, ops


# ----------------------------------------------------------------------------- augmented copies
class CopyGeometry(NamedTuple):
    """A copy's geometric ops, drawn from its generator (`draw_geometry`), and its image -> crop transform."""

    ops: list[dict]
    transform: CropTransform


def draw_geometry(
    rngs: Sequence[np.random.Generator], copy_indices: Sequence[int], rois: np.ndarray, policy: AugmentPolicy
) -> list[CopyGeometry]:
    """The geometry of copies: each copy's geometric ops, the first draws of its generator (none for copy 0
    when `policy.include_original`), and its transform from the roi of its source (`rois` `(n, 4)`), all
    transforms in one vectorised pass. Needs no pixels: a build draws a batch's copies before decoding its
    images, so that each image is cut into its copies as soon as it is decoded."""
    logs = [[] if index == 0 and policy.include_original else _draw_geometry(policy, rng)
            for rng, index in zip(rngs, copy_indices)]  # fmt: skip
    transforms = geometric_transforms(rois, geometric_maps(logs))
    return [CopyGeometry(ops, transform) for ops, transform in zip(logs, transforms)]


class CopyJob(NamedTuple):
    """One augmented copy to make: of `base` (item `item`), drawn from `rng`, numbered `copy_index`; `geometry`
    and `crop`: its geometry already drawn from `rng` and its crop already cut (`draw_geometry`, `warp_crop`),
    default draw and cut them here."""

    base: BaseSample
    item: SourceItem
    rng: np.random.Generator
    copy_index: int
    geometry: CopyGeometry | None = None
    crop: np.ndarray | None = None


def augment_sample(
    base: BaseSample, item: SourceItem, policy: AugmentPolicy, rng: np.random.Generator, copy_index: int
) -> SampleRecord:
    """One augmented record of a source sample (`augment_copies` of one copy)."""
    return augment_copies([CopyJob(base, item, rng, copy_index)], policy)[0]


def augment_copies(jobs: Sequence[CopyJob], policy: AugmentPolicy) -> list[SampleRecord]:
    """Augmented records, of one source sample or of many, their labels computed together
    (`r3fa.readers.make_records`: a build makes all the copies of a batch of sources in one call).

    Args:
        jobs: one per record. A job's generator is the copy's only source of randomness (e.g.
            `copy_rng(seed, item.key, copy_index)`): its geometric ops are drawn first, then its photometric
            ops, so a copy is the same whichever copies are made with it. Copy 0 is the plain crop when
            `policy.include_original`.
        policy: which ops, how often, how strong.

    Returns:
        One record per job, with key `item.key + f"_a{copy_index}"`, `parent_key = item.key`, the applied
        ops with their parameters in `augment`, and `label_nme` measured against the transformed annotation
        landmarks.
    """
    geometry = [job.geometry for job in jobs]
    undrawn = [i for i, drawn in enumerate(geometry) if drawn is None]
    if undrawn:
        fresh = draw_geometry([jobs[i].rng for i in undrawn], [jobs[i].copy_index for i in undrawn],
                              np.stack([jobs[i].base.roi for i in undrawn]), policy)  # fmt: skip
        for i, drawn in zip(undrawn, fresh):
            geometry[i] = drawn
    records = make_records([job.base for job in jobs], [job.item for job in jobs],
                           [drawn.transform for drawn in geometry], [job.crop for job in jobs])  # fmt: skip
    out = []
    for record, drawn, job in zip(records, geometry, jobs):
        original = job.copy_index == 0 and policy.include_original
        crop, photometric = (record.crop, []) if original else _photometric(record.crop, policy, job.rng)
        key = f"{job.item.key}_a{job.copy_index}"
        out.append(record.derived(key=key, parent_key=job.item.key, crop=crop, augment=tuple(drawn.ops + photometric)))
    return out
