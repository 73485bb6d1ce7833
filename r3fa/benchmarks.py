"""The evaluation benchmarks, loaded exactly as 3DDFA's benchmark code reads them.

A `Benchmark` holds, row for row, what the protocol needs: the official 120x120 crops, the roi box each
crop was cut with (to map predictions back to the image), the ground-truth points in the image frame,
the protocol's yaw, the per-image normaliser and, for AFLW, the visibility mask. Three are known:

- `aflw2000-3d`: the 2000 official crops (`aflw2000_3d_crop/`, rows in sorted-name order, which is the
  order of `AFLW2000-3D_crop.list` and of every `test.configs` array); rois `AFLW2000-3D_crop.roi_box.npy`
  used as they are (54 are clipped to the image, hence not square); ground truth the x, y rows of
  `AFLW2000-3D.pts68.npy`; yaw `AFLW2000-3D.pose.npy`; normaliser sqrt(w h) of the ground-truth box.
- `aflw2000-3d-reannotated`: the same crops, rois, yaw and protocol against
  `AFLW2000-3D-Reannotated.pts68.npy` (its own box as normaliser, as the reference does).
- `aflw`: the fixed 4500-crop subset of the 21,080 AFLW test crops (`aflw_crop_subset/`, 1500 per yaw
  bin, rows in `list.txt` order) with 21 ground-truth points (-1 = invisible; only visible points count).
  The 68 predicted points become 21 by 3DDFA's `ind_68to21` map (eye centres = mean of the 6 eye points,
  mouth centre = mean of the 8 inner-lip points). **Normaliser stand-in**: the protocol divides by
  sqrt(w h) of the 68-point ground-truth box from `AFLW_GT_pts68.npy`, which is not available. The crops
  were cut by 3DDFA's landmark rule (square of side max(w, h) of the 68-point box, times sqrt(2)): on
  AFLW2000-3D, whose crops were made the same way, roi side / sqrt(2) equals max(w, h) of the ground-truth
  box to 0.01 % (median over the 1946 unclipped boxes). So we use **roi side / sqrt(2) = max(w, h)** of
  the missing box. Since sqrt(w h) <= max(w, h), the stand-in is larger than the true normaliser: on
  AFLW2000-3D their ratio sqrt(w h) / (side / sqrt 2) is 0.968 / 0.971 / 0.944 in the three yaw bins, so
  AFLW NMEs here are about 3-6 % (relative) lower than the protocol's would be. The bins are 1500 / 1500 /
  1500 of the subset, not the full set's 11596 / 5457 / 4027, so the mean of bin means is comparable, the
  overall mean is not.

`indices` selects rows, `fold`/`n_folds` selects a fold by `r3fa.folds` (sorted position i is in fold
i % n_folds); `rows` remembers their place in the full benchmark and `selection` says in words which rows
these are (tables print it). `dataset_hash` identifies the source arrays and the selection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from r3fa.folds import fold_indices
from r3fa.io import BadInputError
from r3fa.metrics import box_normaliser
from r3fa.paths import data_root

BENCHMARKS: tuple[str, ...] = ("aflw2000-3d", "aflw2000-3d-reannotated", "aflw")

# 3DDFA's benchmark_aflw.py `ind_68to21`, 0-based: each of the 21 AFLW points is the mean of these.
AFLW_68_TO_21: tuple[tuple[int, ...], ...] = (
    (17,), (19,), (21,), (22,), (24,), (26,),
    (36,), (36, 37, 38, 39, 40, 41), (39,),
    (42,), (42, 43, 44, 45, 46, 47), (45,),
    (2,), (31,), (30,), (35,), (14,),
    (48,), (60, 61, 62, 63, 64, 65, 66, 67), (54,), (8,),
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Benchmark:
    """One benchmark (or a selection of its rows), aligned row for row.

    Attributes:
        name: one of `BENCHMARKS`.
        image_dir: folder of the 120x120 crops.
        names: crop file names.
        rows: position of each row in the full benchmark arrays.
        rois: `(B, 4)` [sx, sy, ex, ey] crop boxes in the image frame.
        gt: `(B, 2, P)` ground-truth points in the image frame (P = 68, or 21 for AFLW).
        yaw: `(B,)` the protocol's yaw in degrees.
        normaliser: `(B,)` per-image NME normaliser in image pixels.
        visible: `(B, P)` visibility mask, or None when every point counts.
        point_map: 68 -> P map (each output point is the mean of these 68-point indices), or None.
        dataset_hash: sha256 of the source arrays, the name list and the selected rows.
        selection: which rows, in words ("full set", "fold 1 of 2", "25 selected rows").
        note: what the reader should know about this benchmark's protocol.
    """

    name: str
    image_dir: Path
    names: tuple[str, ...]
    rows: np.ndarray
    rois: np.ndarray
    gt: np.ndarray
    yaw: np.ndarray
    normaliser: np.ndarray
    visible: np.ndarray | None
    point_map: tuple[tuple[int, ...], ...] | None
    dataset_hash: str
    selection: str
    note: str

    def __len__(self) -> int:
        return len(self.names)

    def crops(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows `start:stop` of the crops, `(B, 120, 120, 3)` uint8 BGR (as OpenCV reads them)."""
        out = []
        for name in self.names[start:stop]:
            path = self.image_dir / name
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise BadInputError(path, "unreadable benchmark crop")
            out.append(image)
        return np.stack(out)

    def benchmark_points(self, points68: np.ndarray) -> np.ndarray:
        """`(B, 2|3, 68)` predicted points -> `(B, 2, P)` in this benchmark's point set."""
        xy = np.asarray(points68, np.float64)[:, :2]
        if self.point_map is None:
            return xy
        return np.stack([xy[:, :, list(group)].mean(axis=2) for group in self.point_map], axis=2)


def load_benchmark(
    name: str, indices: np.ndarray | None = None, *, fold: int | None = None, n_folds: int = 2
) -> Benchmark:
    """Load a benchmark from the reference data.

    Args:
        name: `aflw2000-3d`, `aflw2000-3d-reannotated` or `aflw`.
        indices: rows to keep (positions in the benchmark's own order); all rows when None.
        fold: keep the rows of this fold of `n_folds` (`r3fa.folds.fold_indices`); not with `indices`.
        n_folds: number of folds.

    Returns:
        The `Benchmark`, rows in the order of `indices` (ascending for a fold).

    Raises:
        ValueError: for an unknown name, an index or fold out of range, or both `indices` and `fold`.
    """
    if indices is not None and fold is not None:
        raise ValueError("give indices or fold, not both")
    root = data_root()
    configs = root / "3ddfa" / "test.configs"
    if name in ("aflw2000-3d", "aflw2000-3d-reannotated"):
        image_dir = root / "aflw2000_3d_crop"
        list_file = image_dir / "AFLW2000-3D_crop.list"
        gt_file = configs / (
            "AFLW2000-3D.pts68.npy" if name == "aflw2000-3d" else "AFLW2000-3D-Reannotated.pts68.npy"
        )
        sources = [list_file, gt_file, configs / "AFLW2000-3D_crop.roi_box.npy", configs / "AFLW2000-3D.pose.npy"]
        names = list_file.read_text().split()
        gt = np.load(gt_file)[:, :2].astype(np.float64)
        rois = np.load(sources[2]).astype(np.float64)
        yaw = np.load(sources[3]).astype(np.float64)
        normaliser = box_normaliser(gt)
        visible, point_map = None, None
        note = (
            f"{name}: official 120x120 crops and roi boxes (clipped ones as they are), 68 points, "
            "NME / sqrt(w h) of the ground-truth box (3DDFA protocol)"
        )
    elif name == "aflw":
        subset = root / "aflw_crop_subset"
        image_dir = subset / "images"
        list_file = subset / "list.txt"
        sources = [list_file, subset / "pts21.npy", subset / "roi_box.npy", subset / "yaws.npy"]
        names = list_file.read_text().split()
        gt = np.load(sources[1]).astype(np.float64)
        rois = np.load(sources[2]).astype(np.float64)
        yaw = np.load(sources[3]).astype(np.float64)
        visible = (gt[:, 0] != -1) & (gt[:, 1] != -1)
        side = ((rois[:, 2] - rois[:, 0]) + (rois[:, 3] - rois[:, 1])) / 2
        normaliser = side / np.sqrt(2.0)
        point_map = AFLW_68_TO_21
        note = (
            "aflw: 4500-crop yaw-stratified subset (1500 per bin), 21 visible points; normaliser stand-in "
            "roi side / sqrt(2) = max(w, h) of the missing 68-point box (about 3-6 % larger than the "
            "protocol's sqrt(w h), so NME about that much lower)"
        )
    else:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")

    total = len(names)
    if fold is not None:
        rows, selection = fold_indices(total, fold, n_folds), f"fold {fold} of {n_folds}"
    elif indices is not None:
        rows = np.asarray(indices, np.int64).reshape(-1)
        selection = f"{rows.size} selected rows"
    else:
        rows, selection = np.arange(total), "full set"
    if rows.size and (rows.min() < 0 or rows.max() >= total):
        raise ValueError(f"indices out of range for {name} ({total} rows)")
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.read_bytes())
    digest.update(rows.tobytes())
    return Benchmark(
        name=name,
        image_dir=image_dir,
        names=tuple(names[i] for i in rows),
        rows=rows,
        rois=rois[rows],
        gt=gt[rows],
        yaw=yaw[rows],
        normaliser=normaliser[rows],
        visible=None if visible is None else visible[rows],
        point_map=point_map,
        dataset_hash=digest.hexdigest(),
        selection=selection,
        note=note,
    )
