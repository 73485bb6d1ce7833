"""How good are the 62-d labels we derive from 300W-LP-format annotations? A folder audit.

The dataset builder turns every (`.jpg`, `.mat`) pair into a crop-frame label; before trusting a folder of
such pairs we want to know (a) which files cannot be used and why, and (b) how well each label reproduces
the annotation's own 68 landmarks (label NME, DESIGN §2: about 1 % median). `label_pair` is that per-pair
step (shared with the dataset builder); `audit_folder` runs it over a folder tree and summarises it in an
`AuditReport` (count, label-NME median / p95 / max, |yaw| bins, rejections).

Landmarks of a pair, in order of preference: `pt3d_68[:2]` (AFLW2000-3D), a 68-point `pt2d` (300W-LP), the
300W-LP side file `landmarks/<subset>/<name>_pts.mat` (`pts_2d`). Yaw bins use the annotation's own
`Pose_Para` yaw, |yaw| in degrees: `0-30` (<= 30), `30-60` (<= 60), `60-90` (the rest, |yaw| > 90 included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from r3fa.crop import image_to_crop, roi_from_landmarks
from r3fa.io import BadInputError, read_annotation, read_image
from r3fa.labels import (
    crop_frame_params,
    image_frame_affine,
    landmark_nme,
    landmarks_in_image,
    refit_coefficients,
)
from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.morphable import MorphableModel, load_model
from r3fa.records import DATASET_CONVENTION, Rejection

LANDMARKS_DIR = "landmarks"  # 300W-LP's side folder of `<name>_pts.mat` files (not annotations)

Progress = Callable[[int, int], None]  # (pairs done, pairs in all)
T = TypeVar("T")


@dataclass(frozen=True)
class LabeledPair:
    """One (image, annotation) pair turned into a crop-frame label, with how well the label fits."""

    image_path: Path
    annotation_path: Path
    image: np.ndarray  # BGR uint8, as read
    roi: np.ndarray  # (4,) [sx, sy, ex, ey] from the landmarks, image frame
    params: np.ndarray  # (62,) float32, crop frame of roi, DATASET_CONVENTION
    landmarks: np.ndarray  # (2, 68) the annotation's own image-frame landmarks
    yaw_deg: float  # the annotation's Pose_Para yaw, degrees (signed)
    label_nme: float  # NME (percent) of the label's 68 landmarks against `landmarks`


def side_landmarks_path(annotation_path: Path) -> Path:
    """Where 300W-LP keeps the 68 landmarks of `<root>/<subset>/<name>.mat`.

    Returns:
        `<root>/landmarks/<subset>/<name>_pts.mat` (it may not exist).
    """
    subset = annotation_path.parent
    return subset.parent / LANDMARKS_DIR / subset.name / f"{annotation_path.stem}_pts.mat"


def _read_side_landmarks(path: Path) -> np.ndarray:
    """`pts_2d` of a 300W-LP landmark side file as `(2, 68)`."""
    from scipy.io import loadmat

    try:
        pts = np.asarray(loadmat(path)["pts_2d"], np.float64)
    except KeyError:
        raise BadInputError(path, "missing field pts_2d") from None
    except Exception as err:  # scipy raises several types for damaged files
        raise BadInputError(path, f"truncated or corrupt .mat ({type(err).__name__})") from None
    return pts.T if pts.shape == (68, 2) else pts


def annotation_landmarks(annotation_path: Path, pt3d_68: np.ndarray | None, pt2d: np.ndarray | None) -> np.ndarray:
    """The pair's 68 image-frame landmarks `(2, 68)`: `pt3d_68`, else a 68-point `pt2d`, else the side file.

    Raises:
        BadInputError: none of the three gives 68 finite points.
    """
    if pt3d_68 is not None:
        pts = pt3d_68[:2]
    elif pt2d is not None and pt2d.shape == (2, 68):
        pts = pt2d
    elif side_landmarks_path(annotation_path).is_file():
        pts = _read_side_landmarks(side_landmarks_path(annotation_path))
    else:
        raise BadInputError(annotation_path, "no 68 landmarks (pt3d_68, 68-point pt2d or landmarks/ file)")
    if pts.shape != (2, 68):
        raise BadInputError(annotation_path, f"no 68 landmarks (got shape {pts.shape})")
    if not np.isfinite(pts).all():
        raise BadInputError(annotation_path, "non-finite values in landmarks")
    return np.asarray(pts, np.float64)


def _guarded_read(read: Callable[[Path], T], path: Path, reason: str) -> T:
    """`read(path)`, with the errors the core readers let through (a .mat field of the wrong type, a file
    that cannot be opened) turned into a `BadInputError` with `reason`."""
    try:
        return read(path)
    except (OSError, ValueError, TypeError) as err:
        raise BadInputError(path, f"{reason} ({type(err).__name__}: {err})") from None


def label_pair(
    image_path: str | Path, annotation_path: str | Path, model: MorphableModel, refit: bool = False
) -> LabeledPair:
    """Read one (`.jpg`, `.mat`) pair and turn it into a crop-frame label (DATASET_CONVENTION).

    The roi comes from the annotation's 68 landmarks (`roi_from_landmarks`); the label is the annotation's
    pose and first 40 + 10 coefficients in that crop (`crop_frame_params`), optionally refined by a
    least-squares refit of the coefficients with the pose kept.

    Args:
        image_path: the image (its height fixes the annotation's y flip).
        annotation_path: the 300W-LP-format `.mat`.
        model: the 68-point morphable model (`load_model("bfm68")`).
        refit: refit the 50 coefficients to the landmarks.

    Returns:
        The labelled pair, with the label's NME in percent.

    Raises:
        BadInputError: the pair cannot be used (the reason says why).
    """
    image_path, annotation_path = Path(image_path), Path(annotation_path)
    annotation = _guarded_read(read_annotation, annotation_path, "unreadable annotation")
    landmarks = annotation_landmarks(annotation_path, annotation.pt3d_68, annotation.pt2d)
    image = _guarded_read(read_image, image_path, "unreadable image")
    if np.ptp(landmarks[0]) <= 0 or np.ptp(landmarks[1]) <= 0:
        raise BadInputError(annotation_path, "degenerate landmarks (empty box)")
    roi = roi_from_landmarks(landmarks)
    affine = image_frame_affine(annotation.pose_para, image.shape[0])
    params = crop_frame_params(affine, annotation.shape_para, annotation.exp_para, roi, DATASET_CONVENTION)
    if refit:
        params = refit_coefficients(model, params, image_to_crop(landmarks, roi), DATASET_CONVENTION)
    predicted = landmarks_in_image(model, params, roi, DATASET_CONVENTION)[:2]
    nme = float(landmark_nme(predicted, landmarks)) * 100.0
    return LabeledPair(
        image_path=image_path,
        annotation_path=annotation_path,
        image=image,
        roi=roi,
        params=params,
        landmarks=landmarks,
        yaw_deg=float(np.degrees(annotation.pose_para[1])),
        label_nme=nme,
    )


def find_pairs(root: str | Path) -> tuple[list[tuple[Path, Path]], list[Rejection]]:
    """All (`.jpg`, `.mat`) pairs under `root` (recursively, matched by folder and stem).

    300W-LP's `landmarks/**/<name>_pts.mat` side files are not annotations and are left out. A `.mat`
    without its image and an image without its `.mat` are rejections.

    Returns:
        The pairs, sorted by path, and the unpaired files as rejections.
    """
    root = Path(root)
    images: dict[Path, Path] = {}
    annotations: dict[Path, Path] = {}
    for path in root.rglob("*"):
        suffix = path.suffix.lower()
        if suffix == ".jpg":
            images[path.with_suffix("")] = path
        elif suffix == ".mat" and not _is_side_landmark_file(path, root):
            annotations[path.with_suffix("")] = path
    pairs = [(images[s], annotations[s]) for s in sorted(images.keys() & annotations.keys())]
    rejected = [Rejection(str(annotations[s]), "missing image") for s in annotations.keys() - images.keys()]
    rejected += [Rejection(str(images[s]), "missing annotation") for s in images.keys() - annotations.keys()]
    return pairs, rejected


def _is_side_landmark_file(path: Path, root: Path) -> bool:
    return path.stem.endswith("_pts") and LANDMARKS_DIR in path.relative_to(root).parts[:-1]


@dataclass(frozen=True)
class AuditReport:
    """Summary of a folder audit. `count` = pairs labelled successfully."""

    label_nme: np.ndarray  # (count,) percent, one per labelled pair, in path order
    yaw_deg: np.ndarray  # (count,) the annotations' Pose_Para yaw, degrees
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.label_nme.size)

    def nme_summary(self) -> dict[str, float | None]:
        """Median, 95th percentile and max of the label NME in percent (None when nothing was read)."""
        if not self.count:
            return {"median": None, "p95": None, "max": None}
        nme = self.label_nme
        return {"median": float(np.median(nme)), "p95": float(np.percentile(nme, 95)), "max": float(nme.max())}

    def yaw_bins(self) -> dict[str, int]:
        """Pair counts per |yaw| bin of the protocol (`r3fa.metrics.yaw_bin`; |yaw| > 90 counts in `60-90`)."""
        counts = np.bincount(yaw_bin(self.yaw_deg), minlength=len(BIN_NAMES))
        return {name: int(n) for name, n in zip(BIN_NAMES, counts)}

    def to_dict(self) -> dict:
        """The report as JSON-ready data: `count`, `label_nme`, `yaw_bins`, `rejected`."""
        return {
            "count": self.count,
            "label_nme": self.nme_summary(),
            "yaw_bins": self.yaw_bins(),
            "rejected": [{"path": r.path, "reason": r.reason} for r in self.rejected],
        }


def audit_folder(
    root: str | Path, refit: bool = False, progress: Progress | None = None, model: MorphableModel | None = None
) -> AuditReport:
    """Label every (`.jpg`, `.mat`) pair under `root` and report label NME, |yaw| bins and rejections.

    Every unusable file becomes a rejection with its reason; nothing is skipped silently and no bad file
    stops the audit.

    Args:
        root: folder of 300W-LP-format pairs (searched recursively).
        refit: refit the 50 coefficients of each label to its landmarks before measuring.
        progress: called as `progress(done, total)` after each pair.
        model: the 68-point model; `load_model("bfm68")` by default.

    Returns:
        The audit report.
    """
    model = model or load_model("bfm68")
    pairs, rejected = find_pairs(root)
    nmes, yaws = [], []
    for done, (image_path, annotation_path) in enumerate(pairs, start=1):
        try:
            labeled = label_pair(image_path, annotation_path, model, refit=refit)
        except BadInputError as err:
            rejected.append(Rejection(err.path, err.reason))
        else:
            nmes.append(labeled.label_nme)
            yaws.append(labeled.yaw_deg)
        if progress is not None:
            progress(done, len(pairs))
    rejected.sort(key=lambda r: r.path)
    return AuditReport(np.asarray(nmes, np.float64), np.asarray(yaws, np.float64), rejected)
