"""The evaluation engine end to end on real AFLW2000-3D rows: files, schema, round trips, baselines.

The predictors here need no network: one returns the ground truth (NME must be exactly 0), one
reconstructs the dataset's own fitted 3DMM labels (an independent check of the roi back-projection and of
the crop convention: DESIGN §2 says those labels match `pt3d_68` to about 1 % median NME), and the
mean-parameter baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import jsonschema
import numpy as np
import pytest

from r3fa.benchmarks import Benchmark, load_benchmark
from r3fa.crop import CropConvention
from r3fa.evaluation import MeanParamsPredictor, evaluate, load_run, predict_landmarks, write_comparison
from r3fa.io import read_annotation
from r3fa.labels import crop_frame_params, image_frame_affine, landmarks_in_image
from r3fa.metrics import nme
from r3fa.morphable import load_model
from r3fa.params import load_whitening
from r3fa.paths import PROJECT_ROOT

SCHEMA = json.loads((PROJECT_ROOT / "schemas" / "nme.schema.json").read_text())
AFLW2000_HEIGHT = 450  # every AFLW2000-3D image is 450 x 450 (data README)


class ReplayPredictor:
    """Returns given image-frame landmarks batch after batch, in the benchmark's row order."""

    def __init__(self, landmarks: np.ndarray):
        self.landmarks, self.done = landmarks, 0

    def landmarks_in_image(self, crops: np.ndarray, rois: np.ndarray) -> np.ndarray:
        out = self.landmarks[self.done : self.done + len(crops)]
        self.done += len(crops)
        return out


@pytest.fixture(scope="module")
def small() -> Benchmark:
    # every 40th image: 50 rows, all three yaw bins present
    return load_benchmark("aflw2000-3d", np.arange(0, 2000, 40))


def test_ground_truth_through_the_engine_scores_zero(small: Benchmark, tmp_path: Path):
    gt = np.concatenate([small.gt, np.zeros((len(small), 1, 68))], axis=1)
    result = evaluate(ReplayPredictor(gt), small, tmp_path, batch_size=16, model_name="ground truth")
    report = json.loads((tmp_path / "nme.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert report == result.report
    assert all(report["bins"][k] == 0.0 for k in ("0-30", "30-60", "60-90", "mean", "std"))
    assert report["counts"]["total"] == 50 and min(report["counts"][k] for k in ("0-30", "30-60", "60-90")) > 0
    assert report["auc_7"] == 1.0 and report["model"]["checkpoint_sha256"] is None
    assert report["evaluated_on"] == "50 selected rows"
    for kind in ("ced", "ced_bins", "overlay", "table"):
        assert result.paths[kind].stat().st_size > 0
    # the Parquet read back by an independent reader
    rows = duckdb.sql(f"select name, row, yaw, bin, nme from '{tmp_path / 'errors.parquet'}' order by row").fetchall()
    assert [r[0] for r in rows] == list(small.names) and [r[1] for r in rows] == small.rows.tolist()
    assert {r[3] for r in rows} == {"0-30", "30-60", "60-90"} and all(r[4] == 0.0 for r in rows)


def test_fitted_labels_match_the_ground_truth_through_roi_and_convention(small: Benchmark, data_root: Path):
    bfm = load_model("bfm68")
    for convention in CropConvention:
        params = []
        for name, roi in zip(small.names, small.rois):
            ann = read_annotation(data_root / "aflw2000_3d" / name.replace(".jpg", ".mat"))
            affine = image_frame_affine(ann.pose_para, AFLW2000_HEIGHT)
            params.append(crop_frame_params(affine, ann.shape_para, ann.exp_para, roi, convention))
        lms = landmarks_in_image(bfm, np.array(params), small.rois, convention)
        predicted = predict_landmarks(ReplayPredictor(lms), small, batch_size=50)
        values = nme(small.benchmark_points(predicted), small.gt, small.normaliser)
        assert np.median(values) < 0.012, convention


def test_mean_params_baseline_and_comparison(small: Benchmark, tmp_path: Path):
    baseline = MeanParamsPredictor.from_whitening(load_whitening("v1"), CropConvention.V1)
    crops = small.crops(0, 3)
    assert np.array_equal(baseline.params(crops), np.tile(load_whitening("v1").mean.astype(np.float64), (3, 1)))
    mean_run = evaluate(baseline, small, tmp_path / "mean", model_name="mean params")
    gt = np.concatenate([small.gt, np.zeros((len(small), 1, 68))], axis=1)
    gt_run = evaluate(ReplayPredictor(gt), small, tmp_path / "gt", model_name="ground truth")
    assert mean_run.summary["mean"] > 5.0  # a constant face is far from every image
    report, errors = load_run(tmp_path / "mean")
    assert report == mean_run.report and np.allclose(errors, mean_run.nme)

    paths = write_comparison([gt_run, tmp_path / "mean"], tmp_path / "cmp")
    table = paths["table"].read_text()
    assert paths["ced"].stat().st_size > 0 and paths["ced_bins"].stat().st_size > 0
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| ground truth | aflw2000-3d | 50 selected rows | 0.000")
    assert lines[2].startswith("| mean params |")
    assert "| R3FA (paper) | aflw2000-3d | full set, published | 3.149 | 4.010 | 5.270 | 4.143 |" in table
    assert "3DDFA-V2 (MobileNet, M+R+S)" in table and "ground truth, mean params: aflw2000-3d" in table
