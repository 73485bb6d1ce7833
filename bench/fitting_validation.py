"""Validation of `r3fa.fitting` on AFLW2000-3D: fitted labels against the re-annotated 68 points (issue 16).

For all 2000 images, fits the 62-d label to `AFLW2000-3D-Reannotated.pts68.npy` with and without landmark
marching and reports, per |yaw| bin of `AFLW2000-3D.pose.npy`: median and p95 NME (percent, box normaliser,
`r3fa.labels.landmark_nme`) of the fitted label's 68 landmarks against those points, beside the official fits'
(`Pose_Para` + the first 40 / 10 coefficients of each `.mat`); and the median |difference| between the fitted
and the official `Pose_Para` yaw (signed, and of |yaw|). Results go to stdout as JSON (and `--out FILE`).

Example:
    .venv/bin/python bench/fitting_validation.py --out runs/fitting_validation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from r3fa.fitting import FitSettings, fit_landmarks
from r3fa.io import read_annotation
from r3fa.labels import image_frame_affine, landmark_nme
from r3fa.metrics import BIN_NAMES, BIN_EDGES
from r3fa.paths import data_root
from r3fa.readers import label_landmarks

HEIGHT = 450  # every AFLW2000-3D image is 450x450


def _stats(nme: np.ndarray, abs_yaw: np.ndarray) -> dict:
    bins = np.digitize(abs_yaw, BIN_EDGES, right=True)
    out = {"all": {"median": float(np.median(nme)), "p95": float(np.percentile(nme, 95)), "n": int(len(nme))}}
    for k, name in enumerate(BIN_NAMES):
        part = nme[bins == k]
        out[name] = {"median": float(np.median(part)), "p95": float(np.percentile(part, 95)), "n": int(len(part))}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--limit", type=int, default=None, help="first N images only (quick look)")
    args = parser.parse_args(argv)
    root = data_root()
    points = np.load(root / "3ddfa/test.configs/AFLW2000-3D-Reannotated.pts68.npy")[: args.limit]
    abs_yaw = np.abs(np.load(root / "3ddfa/test.configs/AFLW2000-3D.pose.npy"))[: len(points)]
    mats = sorted((root / "aflw2000_3d").glob("image*.mat"))[: len(points)]
    annotations = [read_annotation(m) for m in mats]
    official = np.array([
        100 * float(landmark_nme(label_landmarks(image_frame_affine(a.pose_para, HEIGHT), a.shape_para[:40],
                                                 a.exp_para[:10]), p))
        for a, p in zip(annotations, points)
    ])  # fmt: skip
    official_yaw = np.degrees([a.pose_para[1] for a in annotations])
    report = {"images": len(points), "official": _stats(official, abs_yaw)}
    for marching in (False, True):
        start = time.process_time()
        fits = [fit_landmarks(p, HEIGHT, FitSettings(marching=marching)) for p in points]
        seconds = time.process_time() - start
        yaw = np.array([f.yaw_deg for f in fits])
        report["marching" if marching else "no_marching"] = {
            "nme": _stats(np.array([f.nme for f in fits]), abs_yaw),
            "residual_nme_median": float(np.median([f.residual_nme for f in fits])),
            "yaw_abs_diff_median_deg": float(np.median(np.abs(yaw - official_yaw))),
            "abs_yaw_diff_median_deg": float(np.median(np.abs(np.abs(yaw) - np.abs(official_yaw)))),
            "fits_per_cpu_second": len(fits) / seconds,
        }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
