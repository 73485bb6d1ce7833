"""How good are the 62-d labels we derive from 300W-LP-format annotations? A folder audit.

The dataset builder turns every (`.jpg`, `.mat`) pair into a crop-frame label; before trusting a folder of
such pairs we want to know (a) which files cannot be used and why, and (b) how well each label reproduces
the annotation's own 68 landmarks (label NME, DESIGN §2: about 1 % median). The per-pair step is the
dataset builder's own reader, `r3fa.readers.load_source_sample` (no second copy of it lives here):
`source_item` names a pair's files as a `SourceItem`, `audit_folder` reads every pair of a folder tree
with it and summarises the result in an `AuditReport` (inputs, count, label-NME median / p95 / max, |yaw|
bins, rejections). Files are listed and paired by the builder's own discovery (`r3fa.readers.group_files`,
`pair_inputs`: suffixes case-insensitive, unpaired files and key collisions rejected), so the audit and a
build of the same folder count the same inputs; every input is either counted or rejected
(`inputs == count + len(rejected)`), whatever exception reading it raises.

Landmarks of a pair, in order of preference: `pt3d_68[:2]` (AFLW2000-3D), a 68-point `pt2d` (300W-LP), the
300W-LP side file `landmarks/<subset>/<name>_pts.mat` read by `r3fa.io.read_landmarks_file` (`pts_3d`, else
`pts_2d`). Yaw bins use the annotation's own `Pose_Para` yaw, |yaw| in degrees: `0-30` (<= 30), `30-60`
(<= 60), `60-90` (the rest, |yaw| > 90 included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from r3fa.io import MAX_IMAGE_PIXELS
from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.morphable import MorphableModel, load_model
from r3fa.readers import (LANDMARKS_DIR, SourceItem, _key, group_files, load_source_sample, pair_inputs,
                          side_landmarks_path)  # fmt: skip
from r3fa.records import Rejection, rejection_of

Progress = Callable[[int, int], None]  # (pairs done, pairs in all)


def source_item(image_path: str | Path, annotation_path: str | Path) -> SourceItem:
    """The `SourceItem` of one (`.jpg`, `.mat`) pair, with its 300W-LP side landmark file when there is one
    (`r3fa.readers.side_landmarks_path`). Key and subject come from the annotation's path; the audit needs no
    more (its items never become records)."""
    annotation_path = Path(annotation_path)
    side = side_landmarks_path(annotation_path)
    name = str(annotation_path.with_suffix(""))
    return SourceItem(
        key=_key("audit", name),
        source="audit",
        subject_id=name,
        image_path=str(image_path),
        annotation_path=str(annotation_path),
        landmark_path=str(side) if side.is_file() else "",
    )


def find_pairs(root: str | Path) -> tuple[list[SourceItem], list[Rejection]]:
    """All (image, `.mat`) pairs under `root` (recursively, matched by folder and stem, suffixes in any case).

    300W-LP's `landmarks/**/<name>_pts.mat` side files are not annotations and are left out. A `.mat`
    without its image, an image without its `.mat` and a second file of one name are rejections.

    Returns:
        The pairs' items, sorted by path, and the rejected files.
    """
    root = Path(root)
    groups = group_files(root, recursive=True, exclude=lambda path: _is_side_landmark_file(path, root))
    inputs = pair_inputs(groups, lambda image, mat: source_item(image, mat), "audit")
    return [i for i in inputs if isinstance(i, SourceItem)], [i for i in inputs if isinstance(i, Rejection)]


def _is_side_landmark_file(path: Path, root: Path) -> bool:
    return path.suffix.lower() == ".mat" and path.stem.endswith("_pts") and LANDMARKS_DIR in path.relative_to(root).parts[:-1]


@dataclass(frozen=True)
class AuditReport:
    """Summary of a folder audit. `count` = pairs labelled successfully; `inputs == count + len(rejected)`."""

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

    @property
    def inputs(self) -> int:
        """Inputs found: pairs and unpaired or colliding files (each either counted or rejected)."""
        return self.count + len(self.rejected)

    def to_dict(self) -> dict:
        """The report as JSON-ready data: `inputs`, `count`, `label_nme`, `yaw_bins`, `rejected` (path, reason,
        stage, error of each)."""
        return {
            "inputs": self.inputs,
            "count": self.count,
            "label_nme": self.nme_summary(),
            "yaw_bins": self.yaw_bins(),
            "rejected": [{"path": r.path, "reason": r.reason, "stage": r.stage, "error": r.error} for r in self.rejected],
        }


def audit_folder(
    root: str | Path,
    refit: bool = False,
    progress: Progress | None = None,
    model: MorphableModel | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> AuditReport:
    """Label every (`.jpg`, `.mat`) pair under `root` (`load_source_sample`) and report label NME, |yaw| bins
    and rejections.

    Every unusable file becomes a rejection with its reason and exception class, whatever the reader raised
    (a `BadInputError`, a decoder's or linear-algebra routine's error, an `OSError`); nothing is skipped
    silently and no bad file stops the audit (KeyboardInterrupt and SystemExit still do).

    Args:
        root: folder of 300W-LP-format pairs (searched recursively).
        refit: refit the 50 coefficients of each label to its landmarks before measuring.
        progress: called as `progress(done, total)` after each pair.
        model: the 68-point model; `load_model("bfm68")` by default.
        max_image_pixels: larger images are rejected from their header, never decoded.

    Returns:
        The audit report.
    """
    model = model or load_model("bfm68")
    pairs, rejected = find_pairs(root)
    nmes, yaws = [], []
    for done, item in enumerate(pairs, start=1):
        try:
            with np.errstate(all="ignore"):  # hostile values overflow silently: a non-finite NME is rejected below
                sample = load_source_sample(item, refit=refit, model=model, max_image_pixels=max_image_pixels)
        except Exception as err:  # any failure of one pair is its rejection
            rejected.append(rejection_of(err, item.annotation_path, "ingest"))
        else:
            if np.isfinite(sample.label_nme):
                nmes.append(sample.label_nme)
                yaws.append(sample.annotation_yaw_deg)
            else:  # a label the maths turned into inf/NaN is broken, not a number to summarise
                rejected.append(Rejection(item.annotation_path, f"non-finite label NME ({sample.label_nme})", "label"))
        if progress is not None:
            progress(done, len(pairs))
    rejected.sort(key=lambda r: r.path)
    return AuditReport(np.asarray(nmes, np.float64), np.asarray(yaws, np.float64), rejected)
