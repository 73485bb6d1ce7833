"""Does evaluation give the same NME on a GPU as on the CPU, and how fast is it there? (not a test)

Evaluates one checkpoint on AFLW2000-3D (or a fold of it) by the 3DDFA protocol once per device, through the
same `r3fa.evaluation.evaluate` the flow runs, and prints one JSON line per device (mean and bin NMEs, seconds,
ms/image of the prediction pass: crop decoding, forward pass, landmark reconstruction) and a last line with the
largest per-image NME difference between the devices. Needs a CUDA device for the "cuda" run.

    python bench/gpu_eval.py $R3FA_DATA/3ddfa_v2/weights/mb05_120x120.pth --out /tmp/gpu-eval
    python bench/gpu_eval.py runs/demo/train/model.pth --fold 1 --n-folds 2 --devices cuda --out /tmp/demo-eval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from r3fa.benchmarks import load_benchmark
from r3fa.evaluation import evaluate, predict_landmarks
from r3fa.predictor import load_predictor


def run(
    checkpoint: Path, device: str, fold: int | None, n_folds: int, batch: int, out: Path
) -> tuple[dict, np.ndarray]:
    """One device's evaluation: its summary line and its per-image NMEs."""
    predictor = load_predictor(checkpoint, device=device)
    benchmark = load_benchmark("aflw2000-3d", fold=fold, n_folds=n_folds)  # fold None: all 2,000 images
    predict_landmarks(predictor, benchmark, batch)  # warm-up: cuDNN's algorithm choice, the decoder's tables
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    predict_landmarks(predictor, benchmark, batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    predict_s = time.perf_counter() - start
    result = evaluate(predictor, benchmark, out / device.replace(":", "-"), batch, model_name=checkpoint.stem,
                      checkpoint=checkpoint)  # fmt: skip
    bins = result.report["bins"]
    line = {
        "device": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu",
        "images": len(benchmark),
        "mean_nme": bins["mean"],
        "bins": {k: bins[k] for k in ("0-30", "30-60", "60-90")},
        "predict_ms_per_image": 1e3 * predict_s / len(benchmark),
        "batch": batch,
    }
    return line, np.asarray(result.nme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="an r3fa checkpoint or a 3DDFA-V2 .pth")
    parser.add_argument("--out", type=Path, required=True, help="folder for each device's evaluation files")
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--fold", type=int, default=None, help="evaluate one fold (default: all 2000 images)")
    parser.add_argument("--n-folds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 16))
    errors = {}
    for device in args.devices:
        line, errors[device] = run(args.checkpoint, device, args.fold, args.n_folds, args.batch, args.out)
        print(json.dumps(line), flush=True)
    if len(errors) > 1:
        first, *rest = errors.values()
        largest = max(float(np.max(np.abs(first - other))) for other in rest)
        print(json.dumps({"devices": args.devices, "max_abs_per_image_nme_diff_percent": 100.0 * largest}))


if __name__ == "__main__":
    main()
