"""How good are the 62-d labels we derive from 300W-LP-format annotations? A folder audit.

The dataset builder turns every (`.jpg`, `.mat`) pair into a crop-frame label; before trusting a folder of
such pairs we want to know (a) which files cannot be used and why, and (b) how well each label reproduces
the annotation's own 68 landmarks (label NME, DESIGN §2: about 1 % median). The per-pair step is the
dataset builder's own reader, `r3fa.readers.load_source_sample` (no second copy of it lives here):
`source_item` names a pair's files as a `SourceItem`, `audit_folder` reads every pair of a folder tree
with it and summarises the result in an `AuditReport` (count, label-NME median / p95 / max, |yaw| bins,
rejections).

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

from r3fa.io import BadInputError
from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.morphable import MorphableModel, load_model
from r3fa.readers import LANDMARKS_DIR, SourceItem, _key, load_source_sample, side_landmarks_path
from r3fa.records import Rejection

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
    """Label every (`.jpg`, `.mat`) pair under `root` (`load_source_sample`) and report label NME, |yaw| bins
    and rejections.

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
            sample = load_source_sample(source_item(image_path, annotation_path), refit=refit, model=model)
        except BadInputError as err:
            rejected.append(Rejection(err.path, err.reason))
        else:
            nmes.append(sample.label_nme)
            yaws.append(sample.annotation_yaw_deg)
        if progress is not None:
            progress(done, len(pairs))
    rejected.sort(key=lambda r: r.path)
    return AuditReport(np.asarray(nmes, np.float64), np.asarray(yaws, np.float64), rejected)
