"""Landmark error metrics of the 3DDFA benchmark protocol: per-image NME, yaw bins, CED and AUC.

R3FA's published numbers follow 3DDFA's benchmark code (`benchmark_aflw2000.py`, `benchmark_aflw.py`),
so these functions reproduce its arithmetic exactly (DESIGN §5):

- per-image NME = mean over the points of the 2D Euclidean error, divided by sqrt(w * h) of the
  ground-truth 68-point box (AFLW: of a stand-in box, see `r3fa.benchmarks`); only visible points count;
- yaw bins by |yaw|: [0, 30], (30, 60], (60, 90+);
- "mean" = mean of the three bin means, "std" = population std (numpy's default, ddof=0) of the three;
- the CED is the fraction of images at or below an error threshold; its AUC up to a limit (7 %) is the
  area under it divided by the limit.

Everything here is pure numpy over arrays; the benchmark loading and the files live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIN_NAMES: tuple[str, str, str] = ("0-30", "30-60", "60-90")
BIN_EDGES: tuple[float, float] = (30.0, 60.0)
AUC_LIMIT = 0.07


def box_normaliser(points: np.ndarray) -> np.ndarray:
    """sqrt(w * h) of the bounding box of each point set.

    Args:
        points: `(..., 2|3, N)` points; only x and y are used.

    Returns:
        `(...)` float64 normalisers.
    """
    pts = np.asarray(points, np.float64)
    width = pts[..., 0, :].max(axis=-1) - pts[..., 0, :].min(axis=-1)
    height = pts[..., 1, :].max(axis=-1) - pts[..., 1, :].min(axis=-1)
    return np.sqrt(width * height)


def nme(pred: np.ndarray, gt: np.ndarray, normaliser: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """Per-image normalised mean error (a fraction, not percent).

    Args:
        pred: `(B, 2|3, N)` predicted points in the ground truth's frame; only x, y are compared.
        gt: `(B, 2|3, N)` ground-truth points.
        normaliser: `(B,)` per-image normaliser (e.g. `box_normaliser` of the ground truth).
        visible: optional `(B, N)` boolean mask; hidden points are left out of the mean.

    Returns:
        `(B,)` float64 NME; NaN for an image without any visible point.
    """
    err = np.linalg.norm(np.asarray(pred, np.float64)[:, :2] - np.asarray(gt, np.float64)[:, :2], axis=1)
    if visible is None:
        mean_err = err.mean(axis=1)
    else:
        mask = np.asarray(visible, bool)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_err = np.where(mask, err, 0.0).sum(axis=1) / mask.sum(axis=1)
    return mean_err / np.asarray(normaliser, np.float64)


def yaw_bin(yaw_degrees: np.ndarray) -> np.ndarray:
    """Bin index (0, 1, 2) of each yaw: |yaw| <= 30, 30 < |yaw| <= 60, |yaw| > 60."""
    return np.digitize(np.abs(np.asarray(yaw_degrees, np.float64)), BIN_EDGES, right=True)


@dataclass(frozen=True)
class BinSummary:
    """The protocol's numbers, in percent.

    Attributes:
        means: mean NME of each yaw bin (NaN for an empty bin), in `BIN_NAMES` order.
        stds: population std of the NME within each bin.
        counts: images per bin.
        mean: mean of the three bin means (NaN if a bin is empty).
        std: population std of the three bin means.
        overall: plain mean over all images (not the protocol's headline; reported for completeness).
    """

    means: tuple[float, float, float]
    stds: tuple[float, float, float]
    counts: tuple[int, int, int]
    mean: float
    std: float
    overall: float

    def to_dict(self) -> dict:
        """The `bins` block of `nme.json`: `0-30`, `30-60`, `60-90`, `mean`, `std` in percent (`None` where
        a bin is empty). Counts and within-bin stds are separate (`counts`, `bin_std`)."""
        out: dict = {name: _finite(m) for name, m in zip(BIN_NAMES, self.means)}
        out.update(mean=_finite(self.mean), std=_finite(self.std))
        return out


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def summarise(nme_values: np.ndarray, yaw_degrees: np.ndarray) -> BinSummary:
    """Bin the per-image NME by |yaw| and reduce it as the reference does.

    Args:
        nme_values: `(B,)` per-image NME as fractions.
        yaw_degrees: `(B,)` yaw of each image in degrees (the protocol's array).

    Returns:
        A `BinSummary` in percent.
    """
    values = np.asarray(nme_values, np.float64) * 100.0
    bins = yaw_bin(yaw_degrees)
    means, stds, counts = [], [], []
    for k in range(len(BIN_NAMES)):
        sel = values[bins == k]
        counts.append(int(sel.size))
        means.append(float(sel.mean()) if sel.size else float("nan"))
        stds.append(float(sel.std()) if sel.size else float("nan"))
    return BinSummary(
        means=tuple(means),
        stds=tuple(stds),
        counts=tuple(counts),
        mean=float(np.mean(means)),
        std=float(np.std(means)),
        overall=float(values.mean()) if values.size else float("nan"),
    )


def ced(nme_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Cumulative error distribution: fraction of images with NME <= each threshold (same units)."""
    values = np.sort(np.asarray(nme_values, np.float64))
    return np.searchsorted(values, np.asarray(thresholds, np.float64), side="right") / max(values.size, 1)


def auc(nme_values: np.ndarray, limit: float = AUC_LIMIT) -> float:
    """Area under the CED from 0 to `limit`, divided by `limit` (1 = every image error-free).

    The CED is a step function, so the area is exact: each image contributes max(0, limit - e) / limit.
    """
    values = np.asarray(nme_values, np.float64)
    return float(np.clip(1.0 - values / limit, 0.0, 1.0).mean())
