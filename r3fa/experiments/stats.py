"""Interval estimates of an experiment: over training seeds, and paired over evaluation images.

Two sources of uncertainty, two estimators:
- **seeds** (`t_interval`): the runs of one variant differ by their training seed; the mean NME of a bin over
  seeds gets a Student-t 95 % interval (n - 1 degrees of freedom; none for a single seed), and the difference
  of two variants' means a Welch interval (`welch_interval`).
- **images** (`paired_bootstrap`): two variants are evaluated on the same images, so their per-image errors are
  paired; resampling the images (with replacement, within each |yaw| bin so that every resample keeps the
  protocol's bin sizes) gives a percentile interval of the difference of the protocol's numbers. The generator
  is seeded, so a report is reproducible to the byte.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from r3fa.metrics import BIN_NAMES

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate and its interval (None where it cannot be computed, e.g. the bounds of one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    def excludes_zero(self) -> bool:
        """Whether the whole interval lies on one side of 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Mean of `values` and its Student-t interval (bounds None for fewer than two values).

    Raises:
        ValueError: no value, or a non-finite one.
    """
    x = np.asarray(values, np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"t_interval needs finite values, got {x.tolist()}")
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, None, None, int(x.size))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))


def welch_interval(reference: np.ndarray, other: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Difference of means `other - reference` over seeds, with Welch's t-interval (unpaired, unequal variances).

    The runs of two variants share seeds by number only (they train on different data), so they are not paired.
    Bounds are None when either side has fewer than two values or both have no spread.
    """
    a, b = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    diff = float(b.mean() - a.mean())
    if a.size < 2 or b.size < 2:
        return Interval(diff, None, None, int(min(a.size, b.size)))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return Interval(diff, diff, diff, int(min(a.size, b.size)))
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * np.sqrt(va + vb))
    return Interval(diff, diff - half, diff + half, int(min(a.size, b.size)))


def protocol_numbers(errors: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Per-bin mean NME and the mean of the bin means (`BIN_NAMES` then "mean"), in percent.

    Args:
        errors: `(..., B)` per-image NME (fractions); leading axes are independent rows (e.g. resamples).
        bins: `(B,)` bin index of each image (`r3fa.metrics.yaw_bin`).
    """
    means = np.stack([errors[..., bins == b].mean(axis=-1) for b in range(len(BIN_NAMES))], axis=-1) * 100
    return np.concatenate([means, means.mean(axis=-1, keepdims=True)], axis=-1)


def paired_bootstrap(
    reference: np.ndarray, other: np.ndarray, bins: np.ndarray, samples: int, seed: int,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval]:  # fmt: skip
    """Difference `other - reference` of the protocol's numbers, with a stratified paired bootstrap interval.

    Args:
        reference: `(B,)` per-image NME (fractions) of the reference variant.
        other: `(B,)` per-image NME of the compared variant, same images in the same order.
        bins: `(B,)` yaw-bin index of each image; every bin must hold at least one image.
        samples: number of resamples.
        seed: the resampling generator's seed.
        confidence: interval coverage (percentile interval).

    Returns:
        {bin name or "mean": Interval of the difference in percentage points; negative = `other` is better}.

    Raises:
        ValueError: mismatched shapes, non-finite errors or an empty bin.
    """
    reference, other, bins = (np.asarray(a) for a in (reference, other, bins))
    if reference.shape != other.shape or reference.shape != bins.shape or reference.ndim != 1:
        raise ValueError(f"paired arrays must have one shape, got {reference.shape}, {other.shape}, {bins.shape}")
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(other))):
        raise ValueError("paired_bootstrap needs finite per-image errors")
    members = [np.flatnonzero(bins == b) for b in range(len(BIN_NAMES))]
    if any(m.size == 0 for m in members):
        raise ValueError("every yaw bin needs at least one image")
    rng = np.random.default_rng(seed)
    diff = other - reference
    # one resample = for each bin, its own images drawn with replacement; same draws for both variants (paired)
    draws = np.concatenate([rng.choice(m, size=(samples, m.size)) for m in members], axis=1)
    resampled = protocol_numbers(diff[draws], bins[draws[0]])
    point = protocol_numbers(diff, bins)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(resampled, [alpha, 1 - alpha], axis=0)
    names = [*BIN_NAMES, "mean"]
    return {name: Interval(float(point[i]), float(low[i]), float(high[i]), int(diff.size)) for i, name in enumerate(names)}
