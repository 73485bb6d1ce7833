"""The evaluation engine: run a predictor over a benchmark and write the protocol's numbers and figures.

`evaluate` is the one place that turns predictions into results; the Prefect flow, the `r3fa eval`
command and the demo pipeline all call it, and it knows nothing of Prefect. Per run it writes, into its
own folder:

    nme.json                 the protocol's numbers (schemas/nme.schema.json) and the provenance
    errors.parquet           one row per image: name, row, yaw, bin, nme (fraction)
    ced.png                  the cumulative error distribution, AUC at 7 % in the legend
    ced_bins.png             the same per |yaw| bin (0-30, 30-60, 60-90 degrees), one panel each
    overlay_best_worst.png   the best and the worst images, predicted (green) and ground-truth (red) points,
                             each captioned with its NME and yaw
    table.md                 the run beside the paper's and the published peer rows (`r3fa.report`)

`write_comparison` puts several runs into one table and one CED plot (ours vs the baselines).

A predictor is anything with `landmarks_in_image(crops, rois) -> (B, 3, 68)`: the image-frame points of
BGR uint8 crops `(B, 120, 120, 3)` cut with `rois` (`r3fa.predictor.Predictor` does this with its own
whitening and crop convention). `MeanParamsPredictor` is the floor every model must beat.

Progress: `evaluate` calls its `progress(done, total)` after each batch and logs a line per 10 % of the
images (`r3fa.evaluation` logger, INFO), so a run is followed on a terminal (the command's bar) and off one.

Nothing broken is written: a predictor that returns a NaN or an infinity for any image stops the run with
`NonFiniteResultError` before any file exists, and `nme.json` is strict JSON (an empty yaw bin is `null`,
never NaN).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from r3fa.benchmarks import Benchmark
from r3fa.crop import CropConvention, image_to_crop
from r3fa.draw import contact_sheet, draw_landmarks
from r3fa.errors import UserError
from r3fa.labels import landmarks_in_image
from r3fa.metrics import BIN_NAMES, BinSummary, auc, nme, summarise, yaw_bin
from r3fa.morphable import MorphableModel, load_model
from r3fa.params import Whitening
from r3fa.provenance import code_version, file_sha256
from r3fa.report import markdown_table, plot_ced, plot_ced_bins

NME_SCHEMA = "r3fa-nme-v1"
OVERLAY_COUNT = 8  # best and worst images each on the overlay sheet
OVERLAY_SCALE = 2  # crops drawn at 240 x 240 so the points and captions are legible
GT_COLOUR, PRED_COLOUR = (0, 0, 255), (0, 255, 0)  # BGR

Progress = Callable[[int, int], None]
LOG_EVERY_PERCENT = 10
log = logging.getLogger("r3fa.evaluation")


class NonFiniteResultError(UserError):
    """A predictor returned non-finite landmarks: the model is broken, and no result may be written."""


def check_finite_predictions(landmarks: np.ndarray, benchmark: Benchmark) -> None:
    """Raise `NonFiniteResultError` naming the first image whose predicted landmarks are not all finite."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(landmarks, np.float64)).reshape(len(landmarks), -1).all(axis=1))
    if bad.size:
        raise NonFiniteResultError(
            f"{bad.size} of {len(landmarks)} predictions on {benchmark.name} are not finite (first: "
            f"{benchmark.names[bad[0]]}); the model is broken, no result was written"
        )


class LandmarkPredictor(Protocol):
    def landmarks_in_image(self, crops: np.ndarray, rois: np.ndarray) -> np.ndarray: ...


class MeanParamsPredictor:
    """Predicts the same parameters (the training labels' mean) for every crop: the baseline row.

    Args:
        params: `(62,)` parameters in the crop frame of `convention`.
        convention: crop-frame convention those parameters are expressed in.
        model: 3DMM for the landmarks (68-point BFM by default).
    """

    def __init__(self, params: np.ndarray, convention: CropConvention, model: MorphableModel | None = None):
        self.mean_params = np.asarray(params, np.float64).reshape(62)
        self.convention = CropConvention(convention)
        self.model = model if model is not None else load_model("bfm68")

    @classmethod
    def from_whitening(cls, whitening: Whitening, convention: CropConvention) -> "MeanParamsPredictor":
        """The baseline of a training set, from its whitening statistics (their mean is the labels' mean)."""
        return cls(whitening.mean, convention)

    def params(self, crops: np.ndarray) -> np.ndarray:
        """`(B, 62)`: the mean, whatever the crops."""
        return np.broadcast_to(self.mean_params, (len(crops), 62)).copy()

    def landmarks_in_image(self, crops: np.ndarray, rois: np.ndarray) -> np.ndarray:
        """`(B, 3, 68)` image-frame landmarks of the mean parameters placed in each roi."""
        return landmarks_in_image(self.model, self.params(crops), np.asarray(rois, np.float64), self.convention)


@dataclass(frozen=True)
class EvalResult:
    """What one evaluation produced.

    Attributes:
        report: the `nme.json` document.
        nme: `(B,)` per-image NME (fractions), rows as in the benchmark.
        landmarks: `(B, 3, 68)` predicted image-frame landmarks.
        paths: written files by kind (`nme_json`, `errors`, `ced`, `ced_bins`, `overlay`, `table`).
    """

    report: dict
    nme: np.ndarray
    landmarks: np.ndarray
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        """The `bins` block: `0-30`, `30-60`, `60-90`, `mean`, `std` in percent."""
        return self.report["bins"]


def predict_landmarks(
    predictor: LandmarkPredictor, benchmark: Benchmark, batch_size: int = 128, progress: Progress | None = None
) -> np.ndarray:
    """Image-frame landmarks `(B, 3, 68)` of every benchmark crop, in batches (a log line per 10 % done)."""
    out, total, logged = [], len(benchmark), 0
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        out.append(np.asarray(predictor.landmarks_in_image(benchmark.crops(start, stop), benchmark.rois[start:stop])))
        if progress is not None:
            progress(stop, total)
        percent = 100 * stop // total
        if percent // LOG_EVERY_PERCENT > logged // LOG_EVERY_PERCENT:
            logged = percent
            log.info("evaluate benchmark=%s done=%d/%d percent=%d", benchmark.name, stop, total, percent)
    return np.concatenate(out) if out else np.zeros((0, 3, 68))


def evaluate(
    predictor: LandmarkPredictor,
    benchmark: Benchmark,
    out_dir: str | Path,
    batch_size: int = 128,
    progress: Progress | None = None,
    *,
    model_name: str = "model",
    checkpoint: str | Path | None = None,
) -> EvalResult:
    """Evaluate `predictor` on `benchmark` by the 3DDFA protocol and write the run's files.

    Args:
        predictor: maps crops and rois to image-frame landmarks (see the module docstring).
        benchmark: from `r3fa.benchmarks.load_benchmark` (possibly a fold).
        out_dir: folder for this run's files (created).
        batch_size: crops per forward pass.
        progress: called with (done, total) after each batch.
        model_name: the row label in tables and `nme.json`.
        checkpoint: the weights file, hashed into `nme.json` (None for the baselines without one).

    Returns:
        The `EvalResult`; its files are in `out_dir`.

    Raises:
        NonFiniteResultError: a prediction is not finite (nothing is written).
    """
    out_dir = Path(out_dir)
    landmarks = predict_landmarks(predictor, benchmark, batch_size, progress)
    check_finite_predictions(landmarks, benchmark)
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = nme(benchmark.benchmark_points(landmarks), benchmark.gt, benchmark.normaliser, benchmark.visible)
    summary = summarise(errors, benchmark.yaw)
    report = _report(summary, errors, benchmark, model_name, checkpoint)

    paths = {
        "nme_json": out_dir / "nme.json",
        "errors": out_dir / "errors.parquet",
        "ced": out_dir / "ced.png",
        "ced_bins": out_dir / "ced_bins.png",
        "overlay": out_dir / "overlay_best_worst.png",
        "table": out_dir / "table.md",
    }
    paths["nme_json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    write_errors(benchmark, errors, paths["errors"])
    plot_ced([(model_name, errors)], paths["ced"])
    plot_ced_bins([(model_name, errors, benchmark.yaw)], paths["ced_bins"])
    write_overlay(benchmark, landmarks, errors, paths["overlay"])
    paths["table"].write_text(markdown_table([report]))
    return EvalResult(report=report, nme=errors, landmarks=landmarks, paths=paths)


def _report(
    summary: BinSummary,
    errors: np.ndarray,
    benchmark: Benchmark,
    model_name: str,
    checkpoint: str | Path | None,
) -> dict:
    return {
        "schema": NME_SCHEMA,
        "model": {
            "name": model_name,
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "checkpoint_sha256": None if checkpoint is None else file_sha256(checkpoint),
        },
        "benchmark": {
            "name": benchmark.name,
            "images": len(benchmark),
            "dataset_hash": benchmark.dataset_hash,
            "note": benchmark.note,
        },
        "evaluated_on": benchmark.selection,
        "bins": summary.to_dict(),
        "counts": {**dict(zip(BIN_NAMES, summary.counts)), "total": int(sum(summary.counts))},
        "bin_std": {name: (float(s) if np.isfinite(s) else None) for name, s in zip(BIN_NAMES, summary.stds)},
        "overall": float(summary.overall) if np.isfinite(summary.overall) else None,
        "auc_7": auc(errors[np.isfinite(errors)]) if np.isfinite(errors).any() else None,
        "code_version": code_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_errors(benchmark: Benchmark, errors: np.ndarray, path: str | Path) -> Path:
    """The per-image Parquet: name, row (in the full benchmark), yaw, bin (`0-30`...), nme (fraction)."""
    bins = yaw_bin(benchmark.yaw)
    table = pa.table(
        {
            "name": pa.array(benchmark.names, pa.string()),
            "row": pa.array(benchmark.rows, pa.int64()),
            "yaw": pa.array(benchmark.yaw, pa.float64()),
            "bin": pa.array([BIN_NAMES[b] for b in bins], pa.string()),
            "nme": pa.array(errors, pa.float64()),
        }
    )
    pq.write_table(table, path)
    return Path(path)


def write_overlay(
    benchmark: Benchmark, landmarks: np.ndarray, errors: np.ndarray, path: str | Path, count: int = OVERLAY_COUNT
) -> Path:
    """A contact sheet of the `count` best and `count` worst images (first row best), predicted points in
    green, ground truth in red (visible points only), each captioned with its NME and yaw."""
    order = np.argsort(np.where(np.isfinite(errors), errors, np.inf), kind="stable")
    finite = int(np.isfinite(errors).sum())
    count = max(1, min(count, finite // 2))
    picks = list(order[:count]) + list(order[:finite][-count:])
    tiles, captions = [], []
    for i in picks:
        crop = benchmark.crops(int(i), int(i) + 1)[0]
        roi = benchmark.rois[i]
        gt = image_to_crop(benchmark.gt[i], roi)
        if benchmark.visible is not None:
            gt = gt[:, benchmark.visible[i]]
        pred = image_to_crop(benchmark.benchmark_points(landmarks[i : i + 1])[0], roi)
        tile = draw_landmarks(crop, gt, color=GT_COLOUR, scale=OVERLAY_SCALE)
        tiles.append(draw_landmarks(tile, pred * OVERLAY_SCALE, color=PRED_COLOUR))
        captions.append(f"{Path(benchmark.names[i]).stem} {errors[i] * 100:.1f}% yaw {benchmark.yaw[i]:+.0f}")
    sheet = contact_sheet(tiles, ncols=count, captions=captions)
    cv2.imwrite(str(path), np.vstack([_legend(sheet.shape[1]), sheet]))
    return Path(path)


def _legend(width: int) -> np.ndarray:
    """A strip naming the colours and rows of the best/worst sheet."""
    strip = np.zeros((28, width, 3), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(strip, "predicted", (8, 20), font, 0.6, PRED_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(strip, "ground truth", (110, 20), font, 0.6, GT_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(strip, "top row: best images, bottom row: worst (image, NME, yaw in degrees)", (250, 20), font, 0.6,
                (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def load_run(run_dir: str | Path) -> tuple[dict, np.ndarray]:
    """The `nme.json` document and the per-image NME (fractions) of a run folder written by `evaluate`."""
    run_dir = Path(run_dir)
    report = json.loads((run_dir / "nme.json").read_text())
    return report, pq.read_table(run_dir / "errors.parquet", columns=["nme"]).column("nme").to_numpy()


def write_comparison(runs: Sequence[EvalResult | str | Path], out_dir: str | Path) -> dict[str, Path]:
    """One table and one CED plot (all images, and per |yaw| bin) for several runs: ours beside the baselines
    and the published rows.

    Args:
        runs: `EvalResult`s or run folders written by `evaluate`, in the order of the table's rows.
        out_dir: where `table.md`, `ced.png` and `ced_bins.png` go (created).

    Returns:
        Paths of the written files by kind (`table`, `ced`, `ced_bins`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = [(r.report, r.nme) if isinstance(r, EvalResult) else load_run(r) for r in runs]
    paths = {"table": out_dir / "table.md", "ced": out_dir / "ced.png", "ced_bins": out_dir / "ced_bins.png"}
    paths["table"].write_text(markdown_table([report for report, _ in loaded]))
    labels = [f"{report['model']['name']} ({report['benchmark']['name']}, {report['evaluated_on']})" for report, _ in loaded]
    plot_ced([(label, errors) for label, (_, errors) in zip(labels, loaded)], paths["ced"])
    tables = [r.paths["errors"] if isinstance(r, EvalResult) else Path(r) / "errors.parquet" for r in runs]
    yaws = [pq.read_table(table, columns=["yaw"]).column("yaw").to_numpy() for table in tables]
    plot_ced_bins([(label, errors, yaw) for label, (_, errors), yaw in zip(labels, loaded, yaws)], paths["ced_bins"])
    return paths
