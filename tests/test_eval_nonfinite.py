"""The evaluation engine never writes a broken result: one non-finite prediction stops the run before any file
exists, and a finite run's nme.json is strict JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from r3fa.benchmarks import load_benchmark
from r3fa.crop import CropConvention
from r3fa.evaluation import MeanParamsPredictor, NonFiniteResultError, evaluate
from r3fa.params import load_whitening


class _Broken:
    """The mean face everywhere, except a NaN landmark for the crop at position `bad` of each batch."""

    def __init__(self, inner: MeanParamsPredictor, bad: int) -> None:
        self.inner, self.bad = inner, bad

    def landmarks_in_image(self, crops: np.ndarray, rois: np.ndarray) -> np.ndarray:
        out = self.inner.landmarks_in_image(crops, rois)
        if len(out) > self.bad:
            out[self.bad, 0, 5] = np.nan
        return out


@pytest.fixture(scope="module")
def mean_face() -> MeanParamsPredictor:
    return MeanParamsPredictor.from_whitening(load_whitening("v1"), CropConvention.V1)


def test_a_nan_prediction_stops_the_evaluation_and_writes_nothing(tmp_path: Path, mean_face) -> None:
    bench = load_benchmark("aflw2000-3d", fold=1, n_folds=20)
    out = tmp_path / "eval"
    with pytest.raises(NonFiniteResultError, match=r"2 of 100 predictions on aflw2000-3d are not finite \(first: "):
        evaluate(_Broken(mean_face, bad=3), bench, out, batch_size=64)
    assert not out.exists()

    report = evaluate(mean_face, bench, out, batch_size=64).report
    assert json.loads((out / "nme.json").read_text(), parse_constant=pytest.fail) == report
    assert all(np.isfinite(report["bins"][k]) for k in ("0-30", "30-60", "60-90", "mean"))
