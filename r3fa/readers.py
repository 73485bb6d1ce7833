"""Where real samples come from, and how one becomes a 120x120 training record.

The dataset builder works in two steps so that augmentation never re-warps a crop:

1. A *source item* (`SourceItem`) names the files of one real sample. Discovery lists them for each
   source: `discover_300wlp` (the 300W-LP tree), `discover_aflw2000` (AFLW2000-3D, optionally one fold of
   `r3fa.folds`); both (and the folder audit, `r3fa.audit`) list files with `group_files` and pair them with
   `pair_inputs`, so every image or `.mat` they see is an *input*: a usable item, or a `Rejection` (unpaired
   file, key collision) with its reason. `iter_300wlp` / `iter_aflw2000` give the items only.
   `iter_landmark_images` lists any folder of images with 68-point `.pts`/`.ljson` files; these
   have no 3DMM label and serve prediction and previews only, see `load_image_landmarks`.
2. `load_source_sample` reads an item into a `BaseSample`: the full image, the 3DDFA landmark roi, the
   image-frame affine of the annotation's pose, 40 shape + 10 expression coefficients, 68 image-frame
   landmarks and the label NME. It is the one place where an (image, annotation[, landmark file]) becomes a
   label; the folder audit (`r3fa.audit`) calls it too. `make_record` turns a base sample into a
   `SampleRecord` through a `CropTransform`, one 2x3 affine from the original image to the crop (the roi
   crop, or an augmentation's composed geometry, see `r3fa.augment`): the image is warped once and the label
   re-expressed in the crop frame (`DATASET_CONVENTION`), mirrored labels included (`r3fa.landmark_symmetry`).

No reader for the official 120x120 benchmark crops lives here: the dataset builder does not need one, and
`r3fa.benchmarks` loads them for evaluation.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from pathlib import Path

import cv2
import numpy as np

from r3fa.crop import CROP_SIZE, roi_from_landmarks
from r3fa.folds import fold_of_index
from r3fa.io import (
    MAX_IMAGE_PIXELS,
    Annotation,
    BadInputError,
    read_annotation,
    read_image,
    read_landmarks_file,
    read_scaled_image,
)
from r3fa.labels import (
    crop_frame_params,
    homogeneous,
    image_frame_affines,
    landmark_nme,
    landmarks_in_crop,
    refit_coefficients,
)
from r3fa.landmark_symmetry import IBUG68_FLIP, mirror_coefficients
from r3fa.morphable import MorphableModel, load_model, posed_vertices
from r3fa.params import EXP_DIM, SHAPE_DIM, compose, pose_degrees
from r3fa.records import DATASET_CONVENTION, Rejection, SampleRecord

W300LP_SUBSETS = ("AFW", "HELEN", "IBUG", "LFPW")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp")  # matched case-insensitively
ANNOTATION_SUFFIX = ".mat"
LANDMARK_SUFFIXES = (".pts", ".ljson")
LANDMARKS_DIR = "landmarks"  # 300W-LP's folder of `<subset>/<name>_pts.mat` side files (not annotations)
_UNIT_CROP = np.array([0.0, 0.0, CROP_SIZE, CROP_SIZE])  # the roi under which crop pixels are the frame itself


@dataclass(frozen=True)
class SourceItem:
    """The files of one real sample.

    Attributes:
        key: unique within a dataset, no dots (e.g. "aflw2000_3d_image00002", "300wlp_AFW_1051618982_1_0").
        source: "aflw2000_3d", "300wlp/AFW", "300wlp/AFW_Flip", "faces_68pts", ...
        subject_id: identity grouping for splits (a 300W-LP face, its profile views and their flips share one).
        image_path: the original image.
        annotation_path: the 300W-LP-format `.mat` with the 3DMM label; "" when there is none.
        landmark_path: an optional 68-point landmark file (`.pts`, `.ljson`, 300W-LP `_pts.mat`), read with
            `r3fa.io.read_landmarks_file`.
    """

    key: str
    source: str
    subject_id: str
    image_path: str
    annotation_path: str
    landmark_path: str = ""
    landmark_style: str = ""  # "2d"/"3d": no annotation, the label is fitted to the points (r3fa.landmarks68)

    @property
    def has_label(self) -> bool:
        """Whether the item carries a 3DMM label (an annotation `.mat`)."""
        return bool(self.annotation_path)


@dataclass(frozen=True, eq=False)
class SourceRead:
    """One real sample read into its image frame (`read_source`): everything needed to crop it with any roi or
    transform; `measure_sources` adds its label's NME and pose (`BaseSample`).

    Attributes:
        image: the image, BGR uint8, decoded at full size or at half size (`image_step`).
        roi: (4,) [sx, sy, ex, ey], 3DDFA's roi of the landmarks.
        image_affine: (3, 4) model -> image pixels affine of the annotation's pose.
        shape: (40,) shape coefficients.
        exp: (10,) expression coefficients.
        landmarks: (2, 68) the annotation's image-frame landmarks.
        annotation_yaw_deg: the annotation's own `Pose_Para` yaw in degrees (signed), as stored.
        image_step: source pixels per pixel of `image` (`r3fa.io.ScaledImage`): 1, or 2 for an image decoded
            at half size because none of its crops samples it more finely (`pipelines.samples.ingest`).
            Everything but `image` is in the source's full-size frame.
    """

    image: np.ndarray
    roi: np.ndarray
    image_affine: np.ndarray
    shape: np.ndarray
    exp: np.ndarray
    landmarks: np.ndarray
    annotation_yaw_deg: float
    image_step: int = field(default=1, kw_only=True)


@dataclass(frozen=True, eq=False)
class BaseSample(SourceRead):
    """A read sample with its label measured.

    Attributes:
        label_nme: NME (percent) of the label's landmarks against `landmarks`.
        pose_deg: (3,) pitch, yaw, roll in degrees, of the crop-frame label.
        fitted: the label was fitted to 2D landmarks (`r3fa.landmarks68`), not read from a `.mat`.
    """

    label_nme: float
    pose_deg: np.ndarray
    fitted: bool = False


def roi_crop_matrices(rois: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The `(n, 2, 3)` matrices of the plain crops of rois `(n, 4)` (`CropTransform.from_roi` of each; the same
    bits whichever rois are computed together)."""
    sx, sy, ex, ey = np.asarray(rois, np.float64).T
    kx, ky = size / (ex - sx), size / (ey - sy)
    matrices = np.zeros((len(kx), 2, 3))
    matrices[:, 0, 0], matrices[:, 0, 2] = kx, -sx * kx
    matrices[:, 1, 1], matrices[:, 1, 2] = ky, -sy * ky
    return matrices


@dataclass(frozen=True, eq=False)
class CropTransform:
    """A 2x3 affine from original-image pixels to 120x120 crop pixels (a mirror when its determinant < 0)."""

    matrix: np.ndarray

    @classmethod
    def from_roi(cls, roi: np.ndarray, size: int = CROP_SIZE) -> "CropTransform":
        """The plain crop of `roi` [sx, sy, ex, ey], the pixel mapping of `r3fa.crop.crop_image`."""
        return cls(roi_crop_matrices(np.asarray(roi, np.float64)[None], size)[0])

    @property
    def mirrored(self) -> bool:
        return bool(np.linalg.det(self.matrix[:, :2]) < 0)

    @property
    def scale(self) -> float:
        """The 2D scale (sqrt of |det|), by which depth scales too."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Image-frame points `(2, N)` -> crop pixels `(2, N)`."""
        return self.matrix[:, :2] @ np.asarray(points, np.float64)[:2] + self.matrix[:, 2:]

    def roi(self, size: int = CROP_SIZE) -> np.ndarray:
        """The axis-aligned box [sx, sy, ex, ey] in the image that the crop's corners map back to."""
        return crop_rois(self.matrix[None], size)[0]


def crop_rois(matrices: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """`CropTransform.roi` of `(k, 2, 3)` image -> crop affines at once: `(k, 4)` boxes [sx, sy, ex, ey]."""
    linear, shift = matrices[:, :, :2], matrices[:, :, 2:]
    det = linear[:, 0, 0] * linear[:, 1, 1] - linear[:, 0, 1] * linear[:, 1, 0]
    inverse = np.stack([linear[:, 1, 1], -linear[:, 0, 1], -linear[:, 1, 0], linear[:, 0, 0]], axis=-1)
    inverse = inverse.reshape(-1, 2, 2) / det[:, None, None]
    corners = inverse @ (np.array([[0, size, 0, size], [0, 0, size, size]], np.float64) - shift)  # (k, 2, 4)
    return np.concatenate([corners.min(axis=-1), corners.max(axis=-1)], axis=-1)


@lru_cache(maxsize=1)
def _bfm68() -> MorphableModel:
    return load_model("bfm68")


# ----------------------------------------------------------------------------- iterators
def _key(*parts: str) -> str:
    """A dataset key from name parts: joined by '_', every character outside [A-Za-z0-9_-] replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", "_".join(parts))


def _strip_profile_index(name: str) -> str:
    """'image_008_1_0' -> 'image_008_1': 300W-LP numbers the synthesised views of a face with a last '_<k>'."""
    return re.sub(r"_\d+$", "", name)


def side_landmarks_path(annotation_path: str | Path) -> Path:
    """Where 300W-LP keeps the 68 landmarks of `<root>/<folder>/<name>.mat`.

    Returns:
        `<root>/landmarks/<folder>/<name>_pts.mat` (it may not exist: 300W-LP ships them for the un-flipped
        subsets only, so an image in a `*_Flip` folder has none).
    """
    annotation_path = Path(annotation_path)
    folder = annotation_path.parent
    return folder.parent / LANDMARKS_DIR / folder.name / f"{annotation_path.stem}_pts.mat"


Input = SourceItem | Rejection  # one discovered input: a usable item, or a file set aside with why


@dataclass(frozen=True)
class FileGroup:
    """The image and annotation files that share one folder and stem (suffixes matched case-insensitively).

    Attributes:
        stem: `folder / stem`, the group's name.
        images: files with a suffix in `IMAGE_SUFFIXES`, sorted (more than one is a key collision).
        annotations: `.mat` files, sorted (more than one is a key collision).
    """

    stem: Path
    images: tuple[Path, ...]
    annotations: tuple[Path, ...]


def group_files(
    folder: str | Path, recursive: bool = False, exclude: Callable[[Path], bool] | None = None
) -> Iterator[FileGroup]:
    """The one file listing of the dataset builder and the audit: every image and `.mat` under `folder`,
    grouped by (folder, stem), sorted by stem path. The names are listed and sorted at the first `next` (one
    folder's mostly in C, `_sorted_files_in`); a group's files are looked at when the group is asked for (a
    source cut at `limit` pays for the groups it uses, not for the whole folder's).

    Suffixes are matched case-insensitively (`image1.JPG` pairs with `image1.Mat`). A dangling symlink is
    listed (reading it gives the rejection); folders are not.

    Args:
        folder: where to look.
        recursive: also look in sub-folders (the audit); the builder's sources list one folder each.
        exclude: files for which this returns True are not listed (300W-LP's side landmark files).
    """
    folder = Path(folder)
    listed = _sorted_files_under(folder) if recursive else _sorted_files_in(folder)
    for stem_path, files in itertools.groupby(listed, key=itemgetter(0)):
        images, annotations = [], []
        for _, name, directory, entry in files:
            suffix = _listed_suffix(name)
            if suffix is None or (entry is not None and _is_dir(entry, directory)):
                continue
            if not (exclude and exclude(directory / name)):
                (annotations if suffix == ANNOTATION_SUFFIX else images).append(name)
        if images or annotations:
            directory = Path(*stem_path[:-1])
            yield FileGroup(directory / stem_path[-1], tuple(directory / n for n in sorted(images)),
                            tuple(directory / n for n in sorted(annotations)))  # fmt: skip


_LISTED_SUFFIXES = frozenset((*IMAGE_SUFFIXES, ANNOTATION_SUFFIX))


def _listed_suffix(name: str) -> str | None:
    """The lower-case suffix of a file `group_files` lists (pathlib's rule: not a leading or trailing dot), or None."""
    stem, dot, suffix = name.rpartition(".")
    suffix = f".{suffix.lower()}"
    return suffix if stem and dot and suffix in _LISTED_SUFFIXES else None


FileEntry = tuple[tuple[str, ...], str, Path, "os.DirEntry | None"]  # (stem path parts, name, folder, entry)


def _sorted_files_in(folder: Path) -> Iterator[FileEntry]:
    """The entries of one folder sorted by (stem, name), folders not yet dropped (`group_files` asks each entry
    it uses). The sort compares strings `stem + NUL + suffix` (NUL sorts first, so a stem sorts before the
    longer stems it begins; names are unique, so the entries themselves are never compared); a stem path is
    made only for the entries that are used."""
    with os.scandir(folder) as scanned:
        entries = list(scanned)
    names = [entry.name for entry in entries]
    keys = [f"{stem}\0{suffix}" for stem, _, suffix in map(str.rpartition, names, itertools.repeat("."))]
    parts = folder.parts
    return (((*parts, name.rpartition(".")[0]), name, folder, entry) for _, name, entry in sorted(zip(keys, names, entries)))


def _sorted_files_under(folder: Path) -> list[FileEntry]:
    """The image and annotation files under `folder` and its sub-folders (symlinks followed, a dangling one
    kept), sorted by (stem path, name)."""
    listed = (p for p in folder.rglob("*") if _listed_suffix(p.name) and not p.is_dir())
    return sorted(((*p.parent.parts, p.name.rpartition(".")[0]), p.name, p.parent, None) for p in listed)


def _is_dir(entry: os.DirEntry, folder: Path) -> bool:
    """`entry.is_dir()`, with `Path.is_dir`'s answer where that raises (a symlink loop is "not a folder")."""
    try:
        return entry.is_dir()
    except OSError:
        return (folder / entry.name).is_dir()


def pair_inputs(
    groups: Iterable[FileGroup], make_item: Callable[[Path, Path], SourceItem], source: str, limit: int | None = None
) -> list[Input]:
    """One input per listed file group, in order: the item of its (image, annotation) pair or the rejection
    of an unpaired file ("missing annotation", "missing image"), then one rejection per extra file of the
    group (two images or two `.mat` files of one stem: "key collision", naming the file that was kept).
    Every file of a group whose name is not valid UTF-8 is rejected (its path could not be recorded).
    Items whose key another item already has are rejected the same way (`unique_keys`). With `limit`, the
    first `limit` inputs (the groups after them are not looked at)."""
    inputs: list[Input] = []
    for group in groups:
        if limit is not None and len(inputs) >= limit:
            break
        if not _utf8(group.stem):  # its path could not be written to the tables and manifest
            reason = "file name is not valid UTF-8 (rename it)"
            inputs += [Rejection(_shown(p), reason, "discover", source=source) for p in (*group.images, *group.annotations)]
            continue
        image = group.images[0] if group.images else None
        annotation = group.annotations[0] if group.annotations else None
        if image is not None and annotation is not None:
            inputs.append(make_item(image, annotation))
        elif image is not None:
            inputs.append(Rejection(str(image), "missing annotation", "discover", source=source))
        else:
            inputs.append(Rejection(str(annotation), "missing image", "discover", source=source))
        for extra, kept in [*((p, image) for p in group.images[1:]), *((p, annotation) for p in group.annotations[1:])]:
            inputs.append(Rejection(str(extra), f"key collision: same name as {kept}", "discover", source=source))
    return unique_keys(inputs)[:limit]


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(path: Path) -> str:
    """A path whose name holds bytes that are not UTF-8, with those bytes written as `\\xNN`."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unique_keys(inputs: Iterable[Input]) -> list[Input]:
    """The inputs with every item whose key an earlier item already has replaced by its rejection (stage
    "discover", reason "key collision: <key> is also made from <the first item's image>"): the first item
    in listing order keeps the key, so a build is the same whatever else collides with it."""
    first: dict[str, SourceItem] = {}
    out: list[Input] = []
    for entry in inputs:
        if isinstance(entry, SourceItem) and entry.key in first:
            reason = f"key collision: {entry.key} is also made from {first[entry.key].image_path}"
            entry = Rejection(entry.image_path, reason, "discover", key=entry.key, source=entry.source)
        elif isinstance(entry, SourceItem):
            first[entry.key] = entry
        out.append(entry)
    return out


def discover_300wlp(root: str | Path, limit: int | None = None) -> list[Input]:
    """The inputs of a 300W-LP tree `{AFW,HELEN,IBUG,LFPW}[_Flip]/<subset>_<name>_<k>.{jpg,mat}`, by folder
    and path (`group_files` in each folder that exists, `pair_inputs`).

    The side landmark file (`side_landmarks_path`: `landmarks/<subset>/<file stem>_pts.mat`) is attached
    when it exists; a flipped image never gets the un-flipped image's file. Subject ids strip the subset
    prefix and the profile index `_<k>` and ignore `_Flip`, so a face, its profile views and their mirror
    images form one subject ("IBUG/image_008_1"). Sources are `300wlp/<folder>`. With `limit`, the first
    `limit` inputs in that order.
    """
    root = Path(root)
    inputs: list[Input] = []
    for subset in W300LP_SUBSETS:
        for folder in (subset, f"{subset}_Flip"):
            if not (root / folder).is_dir():
                continue

            def make_item(image: Path, mat: Path, subset: str = subset, folder: str = folder) -> SourceItem:
                name = image.stem.removeprefix(f"{subset}_")
                landmarks = side_landmarks_path(mat)
                return SourceItem(
                    key=_key("300wlp", folder, name),
                    source=f"300wlp/{folder}",
                    subject_id=f"{subset}/{_strip_profile_index(name)}",
                    image_path=str(image),
                    annotation_path=str(mat),
                    landmark_path=str(landmarks) if landmarks.is_file() else "",
                )

            left = None if limit is None else limit - len(inputs)
            if left is not None and left <= 0:
                break
            inputs += pair_inputs(group_files(root / folder), make_item, f"300wlp/{folder}", left)
    return unique_keys(inputs)


def discover_aflw2000(
    root: str | Path, fold: int | None = None, n_folds: int = 2, limit: int | None = None
) -> list[Input]:
    """The inputs of an AFLW2000-3D folder (`.jpg` + `.mat` of one stem), sorted by name; with `fold`, only the
    stems at sorted positions in that fold (`r3fa.folds.fold_of_index`; positions count the stems that have an
    image, so the folds are those of the benchmark). An annotation without an image belongs to no fold: every
    fold reports it. Each image is its own subject; the source is "aflw2000_3d". With `limit`, the first
    `limit` inputs."""
    if fold is not None and not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} out of range for {n_folds} folds")

    def groups() -> Iterator[FileGroup]:
        position = -1
        for group in group_files(root):
            position += bool(group.images)
            if fold is None or not group.images or fold_of_index(position, n_folds) == fold:
                yield group

    def make_item(image: Path, mat: Path) -> SourceItem:
        return SourceItem(
            key=_key("aflw2000_3d", image.stem),
            source="aflw2000_3d",
            subject_id=f"aflw2000_3d/{image.stem}",
            image_path=str(image),
            annotation_path=str(mat),
        )

    return pair_inputs(groups(), make_item, "aflw2000_3d", limit)


def items_of(inputs: Iterable[Input]) -> Iterator[SourceItem]:
    """The usable items of a list of inputs."""
    return (entry for entry in inputs if isinstance(entry, SourceItem))


def iter_300wlp(root: str | Path) -> Iterator[SourceItem]:
    """The usable items of a 300W-LP tree (`discover_300wlp` without its rejections)."""
    return items_of(discover_300wlp(root))


def iter_aflw2000(root: str | Path, fold: int | None = None, n_folds: int = 2) -> Iterator[SourceItem]:
    """The usable items of an AFLW2000-3D folder (`discover_aflw2000` without its rejections)."""
    return items_of(discover_aflw2000(root, fold, n_folds))


def iter_landmark_images(folder: str | Path, source: str | None = None) -> Iterator[SourceItem]:
    """Images in `folder` that have a 68-point `.pts` or `.ljson` beside them (same stem), sorted by name.

    These have no 3DMM label (`annotation_path == ""`): they are for prediction and previews
    (`load_image_landmarks`), never for training records.

    Args:
        folder: the folder to scan (not recursive).
        source: the items' source name; default the folder's name.
    """
    folder = Path(folder)
    source = source or folder.name
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        landmarks = next((image.with_suffix(s) for s in LANDMARK_SUFFIXES if image.with_suffix(s).is_file()), None)
        if landmarks is None:
            continue
        yield SourceItem(
            key=_key(source, image.stem),
            source=source,
            subject_id=f"{source}/{image.stem}",
            image_path=str(image),
            annotation_path="",
            landmark_path=str(landmarks),
        )


# ----------------------------------------------------------------------------- loading
def _annotation_landmarks(item: SourceItem, pt3d_68: np.ndarray | None, pt2d: np.ndarray | None) -> np.ndarray:
    """The annotation's 68 image-frame landmarks `(2, 68)`: `pt3d_68[:2]`, else a 68-point `pt2d`, else the
    item's landmark file (`r3fa.io.read_landmarks_file`; a 300W-LP side file gives `pts_3d`, else `pts_2d`).

    Raises:
        BadInputError: none of the three gives 68 points, or they span an empty box.
    """
    if pt3d_68 is not None:
        landmarks = pt3d_68[:2]
    elif pt2d is not None and pt2d.shape == (2, 68):
        landmarks = pt2d
    elif item.landmark_path:
        landmarks = read_landmarks_file(item.landmark_path)
    else:
        raise BadInputError(item.annotation_path, "no 68 landmarks (pt3d_68, a 68-point pt2d or a landmark file)")
    landmarks = np.asarray(landmarks, np.float64)
    if (np.ptp(landmarks[:2], axis=1) <= 0).any():
        raise BadInputError(item.annotation_path, "degenerate landmarks (empty box)")
    return landmarks


def label_landmarks(
    image_affine: np.ndarray, shape: np.ndarray, exp: np.ndarray, model: MorphableModel | None = None
) -> np.ndarray:
    """The 68 landmarks `(..., 2, 68)` of labels, in the frame of their affines (`model`: default bfm68)."""
    return posed_vertices(model or _bfm68(), compose(image_affine, shape, exp))[..., :2, :]


def load_source_sample(
    item: SourceItem, *, refit: bool = False, model: MorphableModel | None = None, max_image_pixels: int = MAX_IMAGE_PIXELS
) -> BaseSample:
    """Read one labelled source item into its image frame: the one reader from (image, annotation[, landmark
    file]) to label and label NME, for the dataset builder and the audit alike (`read_source`, then
    `measure_sources`; an item with landmarks only is fitted, `r3fa.landmarks68.load_fitted_sample`).

    Returns:
        The base sample; `label_nme` compares the (refitted) label's landmarks with the annotation's.

    Raises:
        BadInputError: an unreadable or invalid image, annotation or landmark file (path and reason).
        ValueError: the item has no 3DMM label (e.g. from `iter_landmark_images`).
    """
    if not item.has_label and item.landmark_style:
        from r3fa.landmarks68 import load_fitted_sample  # imports this module

        return load_fitted_sample(item, max_image_pixels)
    read = read_source(item, refit=refit, model=model, max_image_pixels=max_image_pixels)
    return measure_sources([read], model)[0]


def read_source(
    item: SourceItem,
    *,
    refit: bool = False,
    model: MorphableModel | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> SourceRead:
    """Read a source item with a 3DMM annotation: its decoded image, landmarks, roi and label
    (`load_source_files`, then `source_reads`).

    Landmarks, in order of preference: `pt3d_68[:2]` (AFLW2000-3D), a 68-point `pt2d` (300W-LP), the item's
    landmark file (300W-LP's side file: `pts_3d`, else `pts_2d`). The roi is 3DDFA's roi of those landmarks,
    the label the annotation's pose and first 40 + 10 coefficients.

    Args:
        item: a source item with an annotation (`item.has_label`).
        refit: refit the 50 coefficients (pose kept) to the annotation's landmarks
            (`r3fa.labels.refit_coefficients`); default keep the annotation's truncated coefficients.
        model: the 68-point model for the refit; default `load_model("bfm68")`.
        max_image_pixels: a larger image is refused from its header (`r3fa.io.read_image`).

    Raises:
        BadInputError: an unreadable or invalid image, annotation or landmark file (path and reason).
        ValueError: the item has no 3DMM label.
    """
    files = load_source_files(item, max_image_pixels=max_image_pixels)
    return source_reads([files], refit=refit, model=model)[0]


@dataclass(frozen=True, eq=False)
class SourceFiles:
    """A source item's files, read and checked (`load_source_files`); `source_reads` adds their geometry.

    Attributes:
        image: the image, BGR uint8, decoded at full size or at half size (`image_step`, `SourceRead`).
        annotation: the annotation's fields.
        landmarks: (2, 68) the annotation's image-frame landmarks (float64).
        image_step: source pixels per pixel of `image`.
    """

    image: np.ndarray
    annotation: Annotation
    landmarks: np.ndarray
    image_step: int = 1


def load_source_files(
    item: SourceItem,
    *,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    labels: tuple[Annotation, np.ndarray] | None = None,
    half_size: bool = False,
) -> SourceFiles:
    """The files of a source item with a 3DMM annotation, read and checked (`read_source`'s reading part).

    Args:
        item: a source item with an annotation (`item.has_label`).
        max_image_pixels: a larger image is refused from its header (`r3fa.io.read_image`).
        labels: the item's `read_labels`, already read; default read them here, after the image (so a bad
            image is reported before a bad annotation).
        half_size: decode the image at half size where it can be (`r3fa.io.decode_scaled`): for an item none
            of whose crops samples it more finely than every second pixel.

    Raises:
        BadInputError: an unreadable or invalid image, annotation or landmark file (path and reason).
        ValueError: the item has no 3DMM label.
    """
    if not item.has_label:
        raise ValueError(f"{item.key}: no 3DMM annotation; items without one are for prediction/preview only")
    image = read_scaled_image(item.image_path, max_image_pixels, half_size)
    annotation, landmarks = labels or read_labels(item)
    return SourceFiles(image.pixels, annotation, landmarks, image.step)


def read_labels(item: SourceItem) -> tuple[Annotation, np.ndarray]:
    """A labelled item's annotation and its 68 image-frame landmarks (`(2, 68)`: `pt3d_68[:2]`, else a
    68-point `pt2d`, else the landmark file), read and checked.

    Raises:
        BadInputError: an unreadable or invalid annotation or landmark file (path and reason).
    """
    annotation = read_annotation(item.annotation_path)
    return annotation, _annotation_landmarks(item, annotation.pt3d_68, annotation.pt2d)


def source_reads(
    files: Sequence[SourceFiles], *, refit: bool = False, model: MorphableModel | None = None
) -> list[SourceRead]:
    """The reads of items' files (`read_source`'s geometry part): the rois of their landmarks and the
    image-frame affines of their poses computed in one vectorised pass (the same bits as one at a time; a
    build reads a batch of sources together), then each label (refitted with `refit`, see `read_source`)."""
    rois = roi_from_landmarks(np.stack([f.landmarks for f in files]))
    heights = [f.image.shape[0] * f.image_step for f in files]  # a halved image has an even full height
    affines = image_frame_affines(np.stack([f.annotation.pose_para for f in files]), heights)
    reads = []
    for f, roi, affine in zip(files, rois, affines):
        shape, exp = f.annotation.shape_para[:SHAPE_DIM], f.annotation.exp_para[:EXP_DIM]
        if refit:
            shape, exp = _refit(affine, shape, exp, f.landmarks, roi, model or _bfm68())
        reads.append(SourceRead(image=f.image, roi=roi, image_affine=affine, shape=np.asarray(shape, np.float64),
                                exp=np.asarray(exp, np.float64), landmarks=f.landmarks,
                                annotation_yaw_deg=float(np.degrees(f.annotation.pose_para[1])),
                                image_step=f.image_step))  # fmt: skip
    return reads


def measure_sources(reads: Sequence[SourceRead], model: MorphableModel | None = None) -> list[BaseSample]:
    """The base samples of read items, their label NME and crop-frame pose measured in one vectorised pass
    (a sample's numbers are the same bits whichever samples are measured with it).

    Raises:
        numpy.linalg.LinAlgError: a pose whose rotation cannot be found (e.g. an overflowing scale).
    """
    affine = np.stack([r.image_affine for r in reads])
    shape, exp = np.stack([r.shape for r in reads]), np.stack([r.exp for r in reads])
    landmarks = np.stack([r.landmarks for r in reads])
    label_nme = 100.0 * landmark_nme(label_landmarks(affine, shape, exp, model), landmarks)
    roi = np.stack([r.roi for r in reads])
    pose_deg = pose_degrees(crop_frame_params(affine, shape, exp, roi, DATASET_CONVENTION))
    return [BaseSample(**vars(r), label_nme=float(label_nme[i]), pose_deg=pose_deg[i]) for i, r in enumerate(reads)]


def _refit(
    affine: np.ndarray,
    shape: np.ndarray,
    exp: np.ndarray,
    landmarks: np.ndarray,
    roi: np.ndarray,
    model: MorphableModel,
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients refitted to the landmarks in the crop frame of `roi` (pose kept)."""
    params = crop_frame_params(affine, shape, exp, roi, DATASET_CONVENTION)
    target = CropTransform.from_roi(roi).apply(landmarks)
    refitted = refit_coefficients(model, params, target, DATASET_CONVENTION).astype(np.float64)
    return refitted[12 : 12 + SHAPE_DIM], refitted[12 + SHAPE_DIM :]


def load_image_landmarks(item: SourceItem) -> tuple[np.ndarray, np.ndarray]:
    """The image (BGR) and its 68 image-frame landmarks `(2, 68)` of an item, labelled or not (for
    prediction and previews). Raises `BadInputError` for unreadable files."""
    image = read_image(item.image_path)
    if item.landmark_path:
        return image, read_landmarks_file(item.landmark_path)
    annotation = read_annotation(item.annotation_path)
    return image, _annotation_landmarks(item, annotation.pt3d_68, annotation.pt2d)


# ----------------------------------------------------------------------------- records
def crop_label(base: BaseSample, transform: CropTransform) -> tuple[np.ndarray, np.ndarray]:
    """The 62-d crop-frame label (`DATASET_CONVENTION`) and the crop-frame landmarks `(2, 68)` of a base
    sample seen through `transform` (`crop_labels` of one transform)."""
    params, landmarks = crop_labels([base], [transform])
    return params[0], landmarks[0]


def crop_labels(bases: Sequence[BaseSample], transforms: Sequence[CropTransform]) -> tuple[np.ndarray, np.ndarray]:
    """The crop-frame labels `(k, 62)` (`DATASET_CONVENTION`) and landmarks `(k, 2, 68)` of `k` views, base
    sample `bases[i]` seen through `transforms[i]`, computed together: a build labels all the copies of a
    batch of sources in one call. A view's label is the same bits whichever views are labelled with it.

    A transform acts on x, y; depth scales with its 2D scale. A mirroring transform maps the face onto its
    mirror image: the pose becomes `L A diag(-1, 1, 1)` (a proper scaled rotation again), the coefficients
    are refitted to the mirrored shape (`mirror_coefficients`) and the landmarks are permuted with the iBUG
    68-point symmetry.
    """
    distinct = list({id(base): base for base in bases}.values())  # each base's arrays stacked once
    position = {id(base): i for i, base in enumerate(distinct)}
    owner = np.array([position[id(base)] for base in bases], np.intp)
    base_affine = homogeneous(np.stack([b.image_affine for b in distinct]))[owner]
    base_landmarks = np.stack([np.asarray(b.landmarks, np.float64)[:2] for b in distinct])[owner]
    shape, exp = np.stack([b.shape for b in distinct])[owner], np.stack([b.exp for b in distinct])[owner]
    matrices = np.stack([t.matrix for t in transforms])  # (k, 2, 3)
    det = matrices[:, 0, 0] * matrices[:, 1, 1] - matrices[:, 0, 1] * matrices[:, 1, 0]
    to_crop = np.zeros((len(matrices), 4, 4))
    to_crop[:, :2, :2], to_crop[:, :2, 3] = matrices[:, :, :2], matrices[:, :, 2]
    to_crop[:, 2, 2], to_crop[:, 3, 3] = np.sqrt(np.abs(det)), 1.0
    affine = to_crop @ base_affine
    landmarks = matrices[:, :, :2] @ base_landmarks + matrices[:, :, 2:]
    mirrored = det < 0
    if mirrored.any():
        shape[mirrored], exp[mirrored], offset = mirror_coefficients(shape[mirrored], exp[mirrored], _bfm68())
        rotation = affine[mirrored, :3, :3] @ np.diag([-1.0, 1.0, 1.0])
        affine[mirrored, :3, :3] = rotation
        affine[mirrored, :3, 3] += (rotation @ offset[..., None])[..., 0]
        landmarks[mirrored] = landmarks[mirrored][:, :, IBUG68_FLIP]
    return crop_frame_params(affine[:, :3], shape, exp, _UNIT_CROP, DATASET_CONVENTION), landmarks


def warp_crop(image: np.ndarray, transform: CropTransform, size: int = CROP_SIZE, step: int = 1) -> np.ndarray:
    """The `size x size` crop through `transform` of an image decoded at `step` source pixels per pixel
    (`r3fa.io.ScaledImage`: its pixel (x, y) is centred on source pixel (step x + (step - 1) / 2, ...)),
    bilinear, black outside the image."""
    matrix = transform.matrix
    if step != 1:
        linear = matrix[:, :2]
        matrix = np.concatenate([step * linear, matrix[:, 2:] + linear.sum(axis=1, keepdims=True) * (step - 1) / 2], 1)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def sampling_steps(matrices: np.ndarray) -> np.ndarray:
    """The smallest distance in source pixels between neighbouring crop pixels of image -> crop affines
    `(n, 2, 3)`, in any direction: 1 / the largest singular value of each linear part. A crop whose step is at
    least 2 samples no detail that an image decoded at half size lacks."""
    linear = np.asarray(matrices, np.float64)[:, :, :2]
    frobenius = np.square(linear).sum(axis=(1, 2))
    det = np.linalg.det(linear)
    largest = np.sqrt((frobenius + np.sqrt(np.maximum(frobenius**2 - 4 * det**2, 0.0))) / 2)
    return 1.0 / largest


def make_record(base: BaseSample, item: SourceItem, transform: CropTransform | None = None) -> SampleRecord:
    """A 120x120 training record of a base sample (`make_records` of one view; default the plain crop of
    `base.roi`, 3DDFA's landmark roi)."""
    return make_records([base], [item], [transform or CropTransform.from_roi(base.roi)])[0]


def make_records(
    bases: Sequence[BaseSample],
    items: Sequence[SourceItem],
    transforms: Sequence[CropTransform],
    crops: Sequence[np.ndarray | None] | None = None,
) -> list[SampleRecord]:
    """120x120 training records of `k` views: base sample `bases[i]` of item `items[i]` through image -> crop
    transform `transforms[i]`; the labels of all of them are computed in one vectorised pass (`crop_labels`).

    Args:
        bases: the samples in their image frame (`load_source_sample`), one per view (repeated for copies).
        items: where each came from (key, source, subject, image path).
        transforms: image -> crop affines.
        crops: the crops already cut (`warp_crop` of the base's image through the transform), None where not;
            default cut them all here.

    Returns:
        The records: crop, crop-frame label and landmarks, pose in degrees, and `label_nme` (percent) of the
        label's crop-frame landmarks against the transformed annotation landmarks. `roi` is the image box
        the crop covers (the axis-aligned bound of its corners for a rotated crop).
    """
    params, landmarks = crop_labels(bases, transforms)
    rois = crop_rois(np.stack([t.matrix for t in transforms]))
    reconstructed = landmarks_in_crop(_bfm68(), params, DATASET_CONVENTION)[:, :2]
    label_nme = (100.0 * landmark_nme(reconstructed, landmarks)).tolist()
    pose_deg = pose_degrees(params).astype(np.float32)
    landmarks = landmarks.astype(np.float32)
    crops = [warp_crop(base.image, transform, step=base.image_step) if crop is None else crop
             for base, transform, crop in zip(bases, transforms, crops or [None] * len(bases))]  # fmt: skip
    return [
        SampleRecord(
            key=item.key,
            source=item.source,
            subject_id=item.subject_id,
            image_path=item.image_path,
            crop=crops[i],
            roi=rois[i],
            params=params[i],
            landmarks=landmarks[i],
            pose_deg=pose_deg[i],
            label_nme=label_nme[i],
            fitted=base.fitted,
        )
        for i, (base, item) in enumerate(zip(bases, items))
    ]
