"""Validation of `r3fa.fitting` on AFLW2000-3D: fitted labels against the re-annotated 68 points (issue 16).

For all 2000 images, fits the 62-d label to `AFLW2000-3D-Reannotated.pts68.npy` with and without landmark
marching and reports, per |yaw| bin of `AFLW2000-3D.pose.npy`: median and p95 NME (percent, box normaliser,
`r3fa.labels.landmark_nme`) of the fitted label's 68 landmarks against those points, beside the official
fits' (`Pose_Para` + the first 40 / 10 coefficients of each `.mat`); and the median |difference| between the
fitted and the official `Pose_Para` yaw (signed, and of |yaw|). Then the pretrained 3DDFA-V2 mb05
(`r3fa.predictor`) judges the labels: on the crop each fitted record would have (3DDFA's roi of the
re-annotated points), its predicted 68 landmarks are compared (NME, normaliser: the reference's box) with the
fitted labels' landmarks and with the official labels'.
Results go to stdout as JSON (and `--out FILE`).

Example:
    .venv/bin/python bench/fitting_validation.py --out runs/fitting_validation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from r3fa.crop import roi_from_landmarks
from r3fa.fitting import FitSettings, fit_landmarks
from r3fa.io import read_image
from r3fa.io import read_annotation
from r3fa.labels import image_frame_affine, landmark_nme
from r3fa.metrics import BIN_NAMES, yaw_bin
from r3fa.paths import data_root
from r3fa.readers import label_landmarks

HEIGHT = 450  # every AFLW2000-3D image is 450x450


def _stats(nme: np.ndarray, abs_yaw: np.ndarray) -> dict:
    bins = yaw_bin(abs_yaw)
    out = {"all": {"median": float(np.median(nme)), "p95": float(np.percentile(nme, 95)), "n": int(len(nme))}}
    for k, name in enumerate(BIN_NAMES):
        part = nme[bins == k]
        out[name] = {"median": float(np.median(part)), "p95": float(np.percentile(part, 95)), "n": int(len(part))}
    return out


def _mb05_judgement(mats: list[Path], points: np.ndarray, abs_yaw: np.ndarray, label_lms: dict) -> dict:
    """mb05's landmarks on the fitted records' crops against each set of label landmarks (and the points)."""
    from r3fa.predictor import load_predictor, predict_in_images

    predictor = load_predictor(data_root() / "3ddfa_v2/weights/mb05_120x120.pth")
    rois = np.stack([roi_from_landmarks(p) for p in points])
    predicted = []
    for start in range(0, len(points), 100):
        images = [read_image(m.with_suffix(".jpg")) for m in mats[start : start + 100]]
        predicted.append(predict_in_images(predictor, images, rois[start : start + 100])[1][:, :2])
    predicted = np.concatenate(predicted)
    references = {**label_lms, "reannotated_points": points}
    return {name: _stats(100 * landmark_nme(predicted, ref), abs_yaw) for name, ref in references.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (quick look)")
    parser.add_argument("--no-mb05", action="store_true", help="skip the mb05 judgement")
    args = parser.parse_args(argv)
    root = data_root()
    points = np.load(root / "3ddfa/test.configs/AFLW2000-3D-Reannotated.pts68.npy")[: args.limit]
    abs_yaw = np.abs(np.load(root / "3ddfa/test.configs/AFLW2000-3D.pose.npy"))[: len(points)]
    mats = sorted((root / "aflw2000_3d").glob("image*.mat"))[: len(points)]
    annotations = [read_annotation(m) for m in mats]
    official_lms = np.stack([
        label_landmarks(image_frame_affine(a.pose_para, HEIGHT), a.shape_para[:40], a.exp_para[:10])
        for a in annotations
    ])  # fmt: skip
    official = 100 * landmark_nme(official_lms, points)
    official_yaw = np.degrees([a.pose_para[1] for a in annotations])
    report = {"images": len(points), "official": _stats(official, abs_yaw)}
    label_lms = {"official": official_lms}
    for marching in (False, True):
        start = time.process_time()
        fits = [fit_landmarks(p, HEIGHT, FitSettings(marching=marching)) for p in points]
        seconds = time.process_time() - start
        yaw = np.array([f.yaw_deg for f in fits])
        label_lms["marching" if marching else "no_marching"] = np.stack([f.landmarks[:2] for f in fits])
        report["marching" if marching else "no_marching"] = {
            "nme": _stats(np.array([f.nme for f in fits]), abs_yaw),
            "residual_nme_median": float(np.median([f.residual_nme for f in fits])),
            "yaw_abs_diff_median_deg": float(np.median(np.abs(yaw - official_yaw))),
            "abs_yaw_diff_median_deg": float(np.median(np.abs(np.abs(yaw) - np.abs(official_yaw)))),
            "fits_per_cpu_second": len(fits) / seconds,
        }
    if not args.no_mb05:
        report["mb05"] = _mb05_judgement(mats, points, abs_yaw, label_lms)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
