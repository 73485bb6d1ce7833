"""Images with 68 2D landmarks and no 3DMM label: a source whose labels are fitted (`r3fa.fitting`).

This is what makes "the 300W-LP recipe" work on any landmark-annotated image set (300W, Menpo, a team's own
annotations): each item's label is fitted to its points when the sample is read, and the rest of the
dataset builder (augmentation, face profiling, shards) treats it like a 300W-LP annotation.

Two layouts of the points:
- **beside the images**: `<stem>.pts` (1-based x y, as menpo writes), `<stem>.ljson` (menpo JSON, points
  stored [y, x]) or `<stem>.mat` (`pt2d` / `pts_2d`, or `pt3d_68` / `pts_3d` whose first two rows are used),
  all read by `r3fa.io.read_landmarks_file`; images without such a file are not listed;
- **one array**: an `.npy` of shape (N, 2, 68) (or (N, 68, 2)) of image-frame points whose rows follow the
  images of the folder in sorted file-name order (how AFLW2000-3D's re-annotated points are published).
  An item then names the array as its `landmark_path`; its row is its image's position in that order.

The annotation style says what the jaw points mean, and so whether landmark marching applies:
"2d" (300W, iBUG, menpo: the jaw follows the visible outline) fits with marching, "3d" (AFLW2000-3D
re-annotated, LS3D-W: projections of 3D points, a hidden jaw is marked where it is) fits without.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from r3fa.crop import roi_from_landmarks
from r3fa.fitting import FitSettings, check_landmarks, fit_landmarks
from r3fa.io import MAX_IMAGE_PIXELS, BadInputError, read_image, read_landmarks_file
from r3fa.labels import crop_frame_params
from r3fa.params import pose_degrees
from r3fa.readers import IMAGE_SUFFIXES, BaseSample, SourceItem
from r3fa.errors import UserError
from r3fa.records import DATASET_CONVENTION, Rejection

BESIDE_SUFFIXES = (".pts", ".ljson", ".mat")
STYLES = ("2d", "3d")


def settings_for(style: str) -> FitSettings:
    """The fit settings of an annotation style: "2d" marches the jaw, "3d" does not."""
    if style not in STYLES:
        raise ValueError(f"unknown landmark style {style!r}: expected one of {', '.join(STYLES)}")
    return FitSettings(marching=style == "2d")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def discover_landmarks68(
    root: str | Path, points: str | Path | None = None, style: str = "2d", source: str | None = None
) -> list[SourceItem | Rejection]:
    """The inputs of a folder of images with 68 2D landmarks, sorted by image name: an item per image with
    points, a rejection (stage "discover", reason "missing landmarks") per image without a landmark file.

    Args:
        root: the image folder (not recursive).
        points: an `.npy` of (N, 2, 68) points, one row per image in sorted-name order; default: a landmark
            file beside each image (`BESIDE_SUFFIXES`, first found).
        style: "2d" or "3d" (module docstring); stored in each item's `landmark_style`.
        source: the items' source name; default "landmarks68/<folder name>".

    Raises:
        ValueError: an unknown style.
        UserError: the points array cannot be read or its row count differs from the number of images.
    """
    settings_for(style)
    root = Path(root)
    source = source or f"landmarks68/{root.name}"
    images = _images(root)
    if points is not None:
        try:
            rows = _array_rows(str(points))
        except (OSError, ValueError, BadInputError) as err:
            raise UserError(f"points array {points}: {err} (expected an .npy of shape (N, 2, 68))") from None
        if rows != len(images):
            raise UserError(f"points array {points}: {rows} rows for {len(images)} images in {root}")
    inputs: list[SourceItem | Rejection] = []
    for image in images:
        if points is not None:
            landmarks: Path | None = Path(points)
        else:
            landmarks = next((image.with_suffix(s) for s in BESIDE_SUFFIXES if image.with_suffix(s).is_file()), None)
        if landmarks is None:
            reason = "missing landmarks (.pts, .ljson or .mat beside the image)"
            inputs.append(Rejection(str(image), reason, "discover"))
            continue
        inputs.append(SourceItem(
            key=re.sub(r"[^A-Za-z0-9_-]", "-", f"{source}_{image.stem}"),
            source=source,
            subject_id=f"{source}/{image.stem}",
            image_path=str(image),
            annotation_path="",
            landmark_path=str(landmarks),
            landmark_style=style,
        ))
    return inputs


def iter_landmarks68(
    root: str | Path, points: str | Path | None = None, style: str = "2d", source: str | None = None
) -> Iterator[SourceItem]:
    """The usable items of `discover_landmarks68`."""
    return (e for e in discover_landmarks68(root, points, style, source) if isinstance(e, SourceItem))


@lru_cache(maxsize=4)
def _array(path: str) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    if array.ndim != 3 or array.shape[1:] not in ((2, 68), (68, 2)):
        raise BadInputError(path, f"expected an array of shape (N, 2, 68), got {array.shape}")
    return array if array.shape[1] == 2 else array.swapaxes(1, 2)


def _array_rows(path: str) -> int:
    return len(_array(path))


@lru_cache(maxsize=4)
def _image_rows(folder: str) -> dict[str, int]:
    return {str(p): i for i, p in enumerate(_images(Path(folder)))}


def read_points(item: SourceItem) -> np.ndarray:
    """The item's 68 image-frame points `(2, 68)`, checked (`r3fa.fitting.check_landmarks`).

    Raises:
        BadInputError: an unreadable file, a missing row, wrong count, NaN, degenerate points.
    """
    path = item.landmark_path
    if path.lower().endswith(".npy"):
        row = _image_rows(str(Path(item.image_path).parent)).get(item.image_path)
        if row is None or row >= _array_rows(path):
            raise BadInputError(path, f"no row of points for {item.image_path}")
        return check_landmarks(_array(path)[row], f"{path}[{row}]")
    return check_landmarks(read_landmarks_file(path), path)


def load_fitted_sample(item: SourceItem, max_image_pixels: int = MAX_IMAGE_PIXELS) -> BaseSample:
    """Read an item of this source into a `BaseSample` whose label is fitted to its points.

    The roi is 3DDFA's roi of the points, `landmarks` the points themselves, `label_nme` the fitted label's
    landmarks against them (as for a 300W-LP annotation), `fitted` is True and `annotation_yaw_deg` is the
    fitted yaw.

    Raises:
        BadInputError: an unusable image or landmark file.
    """
    image = read_image(item.image_path, max_image_pixels)
    points = read_points(item)
    fit = fit_landmarks(points, image.shape[0], settings_for(item.landmark_style), item.landmark_path)
    roi = roi_from_landmarks(points)
    params = crop_frame_params(fit.image_affine, fit.shape, fit.exp, roi, DATASET_CONVENTION)
    return BaseSample(
        image=image,
        roi=roi,
        image_affine=fit.image_affine,
        shape=fit.shape,
        exp=fit.exp,
        landmarks=points,
        label_nme=fit.nme,
        pose_deg=pose_degrees(params),
        annotation_yaw_deg=fit.yaw_deg,
        fitted=True,
    )
