"""Benchmark of the registered backbones: size, MACs and inference speed at 120x120 (not a test).

Per model: trainable parameters, MACs of one forward pass (`r3fa.models.summary`), batched CPU inference in
ms/image (batch 32, eval mode, channels-last, after warm-up, median over repeats) and single-image CPU latency
(batch 1, median). When CUDA is available the same two timings are taken on the GPU (synchronised, fp32) and
the device name is printed; otherwise the output says that no GPU was available.

    python bench/bench_models.py            # full run (a few minutes on 2 cores)
    python bench/bench_models.py --quick    # fewer repeats, for a smoke check
    python bench/bench_models.py --json     # one JSON object instead of the markdown table
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

from r3fa.models import create
from r3fa.models.summary import count_macs, count_params

# (row label, registry name, kwargs)
MODELS: tuple[tuple[str, str, dict], ...] = (
    ("MobDenseNet", "mobdensenet", {}),
    ("MobileNetV2", "mobilenet_v2", {}),
    ("DenseNet121", "densenet121", {}),
    ("ResNeXt50 (32x4d)", "resnext50_32x4d", {}),
    ("3DDFA-V2 MobileNet-V1 x0.5 (mb05)", "mobilenet_v1", {"widen_factor": 0.5}),
    ("3DDFA-V2 MobileNet-V1 x1.0 (mb1)", "mobilenet_v1", {"widen_factor": 1.0}),
)


def median_ms(run: Callable[[], None], repeats: int, warmup: int, sync: Callable[[], None]) -> float:
    """Median wall time of `run()` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_model(model: torch.nn.Module, device: torch.device, batch: int, repeats: int, warmup: int) -> dict[str, float]:
    """ms/image at `batch` and ms for a single image on `device`."""
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = {}
    for size, key in ((batch, "batched_ms_per_image"), (1, "single_image_ms")):
        x = torch.randn(size, 3, 120, 120, device=device).to(memory_format=torch.channels_last)
        with torch.inference_mode():
            ms = median_ms(lambda: model(x), repeats, warmup, sync)
        out[key] = ms / size
    return out


def cpu_name() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def run(quick: bool, threads: int, batch: int) -> dict:
    torch.set_num_threads(threads)
    repeats, warmup = (3, 1) if quick else (10, 3)
    gpu = torch.device("cuda") if torch.cuda.is_available() else None
    rows = []
    for label, name, kwargs in MODELS:
        torch.manual_seed(0)
        model = create(name, **kwargs)
        row = {"model": label, "name": name, "kwargs": kwargs, "params": count_params(model), "macs": count_macs(model)}
        row.update({f"cpu_{k}": v for k, v in time_model(model, torch.device("cpu"), batch, repeats, warmup).items()})
        if gpu is not None:
            row.update({f"gpu_{k}": v for k, v in time_model(model, gpu, batch, repeats * 4, warmup * 4).items()})
        rows.append(row)
    return {
        "cpu": cpu_name(),
        "threads": threads,
        "batch": batch,
        "repeats": repeats,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if gpu is not None else None,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    gpu = result["gpu"]
    head = ["model", "params (M)", "MACs (M)", f"CPU ms/image (batch {result['batch']})", "CPU ms (1 image)"]
    if gpu:
        head += [f"GPU ms/image (batch {result['batch']})", "GPU ms (1 image)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [r["model"], f"{r['params'] / 1e6:.3f}", f"{r['macs'] / 1e6:.1f}",
                 f"{r['cpu_batched_ms_per_image']:.2f}", f"{r['cpu_single_image_ms']:.2f}"]
        if gpu:
            cells += [f"{r['gpu_batched_ms_per_image']:.3f}", f"{r['gpu_single_image_ms']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    device = f"GPU: {gpu}" if gpu else "GPU: none available in this run (no CUDA device), so no GPU columns"
    lines += ["", f"CPU: {result['cpu']}, {result['threads']} threads; torch {result['torch']}; median of "
              f"{result['repeats']} timed runs after warm-up; fp32, channels-last, inference mode. {device}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats after 1 warm-up (default 10 after 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the batched timing (default 32)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the markdown table")
    args = parser.parse_args()
    result = run(args.quick, args.threads, args.batch)
    print(json.dumps(result, indent=2) if args.json else markdown(result))


if __name__ == "__main__":
    main()
