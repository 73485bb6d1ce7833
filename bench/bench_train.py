"""Benchmark of training throughput (images/s) of a registry model through the engine's own step (not a test).

Times `r3fa.training.train_one_epoch` (forward, 0.5 WPDC + 1.0 Wing, backward, Adam) on synthetic batches
held in memory, so the number is the model's training speed without the loader. Each variant runs in its own
process because glibc reads GLIBC_TUNABLES only at start-up: on the CPU with and without the malloc thresholds
that the Makefile exports, on a GPU (`--device cuda`) with and without bfloat16 autocast (the engine's AMP), and
with and without channels-last in both cases.

    python bench/bench_train.py                         # MobDenseNet, batch 128, 4 timed steps per variant
    python bench/bench_train.py --steps 2 --batch 32    # quicker
    python bench/bench_train.py --device cuda --batch 256 --steps 50   # GPU: fp32 vs bf16 AMP
    python bench/bench_train.py --one                   # one variant in this process (what the others run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from r3fa.crop import CropConvention
from r3fa.dataset_info import DatasetInfo
from r3fa.params import load_whitening
from r3fa.train_config import TrainConfig
from r3fa.train_resume import TrainState
from r3fa.training import build_loss, build_model, build_optimizer, train_one_epoch

TUNABLES = "glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296"


def measure(
    model: str, batch: int, steps: int, channels_last: bool, device_name: str = "cpu", amp: bool = False
) -> float:
    """Images/s over `steps` training steps after warm-up steps, on `device_name` (synchronised on CUDA)."""
    cfg = TrainConfig(model={"name": model}, batch_size=batch, channels_last=channels_last, device=device_name)
    device = torch.device(device_name)
    whitening = load_whitening("v1")
    info = DatasetInfo(whitening, "bench", CropConvention.V1)
    net = build_model(cfg, device)
    loss = build_loss(cfg, info, torch.Generator().manual_seed(0), device)
    optimizer = build_optimizer(cfg, net)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        image = rng.standard_normal((batch, 3, 120, 120), dtype=np.float32)
        params = whitening.unwhiten(rng.standard_normal((batch, 62)).astype(np.float32))
        batches.append({"image": torch.from_numpy(image).to(device), "params": torch.from_numpy(params).to(device)})
    warm = [batches[0]] if device.type == "cpu" else batches * 3  # a GPU also warms up cuDNN's algorithm choice
    timed = [batches[i % 2] for i in range(steps)]
    state = TrainState()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    train_one_epoch(net, warm, loss, optimizer, state, device=device, amp=amp, channels_last=channels_last)
    sync()
    start = time.perf_counter()
    train_one_epoch(net, timed, loss, optimizer, state, device=device, amp=amp, channels_last=channels_last)
    sync()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobdensenet")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu", help='"cpu" (default) or "cuda"')
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--amp", action="store_true", help="with --one: bfloat16 autocast (CUDA only)")
    parser.add_argument("--one", action="store_true", help="measure one variant here and print JSON")
    args = parser.parse_args()
    if args.one:
        rate = measure(args.model, args.batch, args.steps, not args.no_channels_last, args.device, args.amp)
        print(json.dumps({"images_per_s": rate}))
        return
    gpu = args.device.startswith("cuda")
    where = torch.cuda.get_device_name(torch.device(args.device)) if gpu else (
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads")
    print(f"{args.model}, batch {args.batch}, {args.steps} timed steps, {where}, torch {torch.__version__}")
    first = "bf16 autocast" if gpu else "GLIBC_TUNABLES"
    print(f"| {first} | channels_last | images/s |\n|---|---|---|")
    for switch in (False, True):
        for channels_last in (False, True):
            env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            if switch and not gpu:
                env["GLIBC_TUNABLES"] = TUNABLES
            command = [sys.executable, __file__, "--one", "--model", args.model, "--batch", str(args.batch),
                       "--steps", str(args.steps), "--device", args.device,
                       *([] if channels_last else ["--no-channels-last"]),
                       *(["--amp"] if switch and gpu else [])]  # fmt: skip
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            rate = json.loads(out.strip().splitlines()[-1])["images_per_s"]
            label = ("on" if switch else "off") if gpu else ("set" if switch else "unset")
            print(f"| {label} | {'yes' if channels_last else 'no'} | {rate:.1f} |")


if __name__ == "__main__":
    main()
