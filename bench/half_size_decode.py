"""Does decoding at half size lose anything a crop can show? (not a test)

The builder decodes a source JPEG at half size when every crop it cuts from it steps at least 2 source pixels
per crop pixel (`MixConfig.half_size_decode`, `pipelines.samples.ingest`). This compares the two decodes on
AFLW2000-3D's images, each cut with its official roi through the builder's own functions
(`r3fa.io.read_scaled_image`, `r3fa.readers.warp_crop`), for every image whose roi qualifies, and prints one
JSON line:

- `pixels`: mean and largest absolute difference (grey levels) between the crops of the two decodes, and the
  largest mean of one image;
- `reference`: the mean distance of each crop from an anti-aliased one (the full decode cut at 4x the size,
  then area-averaged down to 120x120), and on how many images the half-size crop is the closer one: which of
  the two is closer to what the crop should show;
- `nme`: the pretrained 3DDFA-V2 mb05 network's NME (%) on the re-annotated landmarks, with the crops of
  each decode, on the qualifying images (and on all 2000, the others cut from the full decode), and the
  paired per-image difference (half - full) with its standard error.

    python bench/half_size_decode.py              # all 2000 images, ~1 min on 2 cores
    python bench/half_size_decode.py --limit 300  # the first 300
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from r3fa.benchmarks import load_benchmark
from r3fa.crop import CROP_SIZE
from r3fa.io import read_scaled_image
from r3fa.metrics import nme
from r3fa.paths import data_root
from r3fa.predictor import load_predictor
from r3fa.readers import CropTransform, sampling_steps, warp_crop

SUPERSAMPLE = 4


def _reference(image: np.ndarray, transform: CropTransform) -> np.ndarray:
    """The crop cut at `SUPERSAMPLE` x the size, then area-averaged: an anti-aliased crop."""
    big = CROP_SIZE * SUPERSAMPLE
    fine = CropTransform(transform.matrix * SUPERSAMPLE + np.array([[0, 0, (SUPERSAMPLE - 1) / 2]] * 2))
    crop = warp_crop(image, fine, big).astype(np.float32)
    return cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first LIMIT images")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    benchmark = load_benchmark("aflw2000-3d-reannotated")
    rows = np.arange(len(benchmark) if args.limit is None else min(args.limit, len(benchmark)))
    transforms = [CropTransform.from_roi(benchmark.rois[i]) for i in rows]
    qualifies = sampling_steps(np.stack([t.matrix for t in transforms])) >= 2.0
    full_crops, half_crops, to_reference, half_closer = [], [], {"full": 0.0, "half": 0.0}, 0
    for i, transform, half_ok in zip(rows, transforms, qualifies):
        path = data_root() / "aflw2000_3d" / benchmark.names[i]
        full = read_scaled_image(path)
        full_crops.append(warp_crop(full.pixels, transform))
        if not half_ok:
            half_crops.append(full_crops[-1])
            continue
        half = read_scaled_image(path, half_size=True)
        assert half.step == 2, f"{path}: not decoded at half size"
        half_crops.append(warp_crop(half.pixels, transform, step=half.step))
        reference = _reference(full.pixels, transform)
        distance = {name: float(np.abs(crop.astype(np.float32) - reference).mean())
                    for name, crop in (("full", full_crops[-1]), ("half", half_crops[-1]))}  # fmt: skip
        for name, value in distance.items():
            to_reference[name] += value
        half_closer += distance["half"] < distance["full"]
    full_crops, half_crops = np.stack(full_crops), np.stack(half_crops)
    diff = np.abs(full_crops.astype(np.int16) - half_crops.astype(np.int16))[qualifies]
    predictor = load_predictor(data_root() / "3ddfa_v2" / "weights" / "mb05_120x120.pth")
    errors = {}
    for name, crops in (("full", full_crops), ("half", half_crops)):
        landmarks = np.concatenate([predictor.landmarks_in_image(crops[at : at + 200], benchmark.rois[rows][at : at + 200])
                                    for at in range(0, len(rows), 200)])  # fmt: skip
        errors[name] = 100 * nme(benchmark.benchmark_points(landmarks), benchmark.gt[rows], benchmark.normaliser[rows])
    paired = (errors["half"] - errors["full"])[qualifies]
    n = int(qualifies.sum())
    print(json.dumps({
        "images": len(rows),
        "qualifying": n,
        "pixels": {"mean_abs": round(float(diff.mean()), 3), "max_abs": int(diff.max()),
                   "worst_image_mean_abs": round(float(diff.reshape(n, -1).mean(1).max()), 3)},
        "reference": {**{name: round(total / n, 3) for name, total in to_reference.items()},
                      "images_where_half_is_closer": half_closer},
        "nme": {
            "qualifying": {name: round(float(e[qualifies].mean()), 4) for name, e in errors.items()},
            "all": {name: round(float(e.mean()), 4) for name, e in errors.items()},
            "paired_half_minus_full": {"mean": round(float(paired.mean()), 4),
                                       "sem": round(float(paired.std(ddof=1) / np.sqrt(n)), 4)},
        },
    }))  # fmt: skip


if __name__ == "__main__":
    main()
