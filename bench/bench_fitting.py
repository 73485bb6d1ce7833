"""How fast is 3DMM fitting? Fits per second on one core (`r3fa.fitting.fit_landmarks`), and what 300W costs.

300W has 3,837 images; the target (issue 16) is "in minutes on one core". Fits the re-annotated AFLW2000-3D
points with and without landmark marching, every math library pinned to one thread, and reports fits per
CPU-second of this process and the extrapolated time for 3,837 images.

Example:
    .venv/bin/python bench/bench_fitting.py --images 400
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from r3fa.fitting import FitSettings, fit_landmarks  # noqa: E402
from r3fa.paths import data_root  # noqa: E402

IMAGES_300W = 3837


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="AFLW2000-3D point sets to fit")
    args = parser.parse_args(argv)
    points = np.load(data_root() / "3ddfa/test.configs/AFLW2000-3D-Reannotated.pts68.npy")[: args.images]
    fit_landmarks(points[0], 450)  # builds and caches the models outside the timing
    report = {"images": len(points)}
    for marching in (False, True):
        settings = FitSettings(marching=marching)
        cpu, wall = time.process_time(), time.perf_counter()
        for p in points:
            fit_landmarks(p, 450, settings)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rate = len(points) / cpu
        report["marching" if marching else "no_marching"] = {
            "fits_per_cpu_second": rate, "wall_seconds": wall, "minutes_for_300w": IMAGES_300W / rate / 60,
        }  # fmt: skip
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
