"""Benchmark of training throughput (images/s) of a registry model through the engine's own step (not a test).

Times `r3fa.training.train_one_epoch` (forward, 0.5 WPDC + 1.0 Wing, backward, Adam) on synthetic batches
held in memory, so the number is the model's training speed without the loader. Each variant runs in its own
process because glibc reads GLIBC_TUNABLES only at start-up: with and without the malloc thresholds that the
Makefile exports, and with and without channels-last.

    python bench/bench_train.py                         # MobDenseNet, batch 128, 4 timed steps per variant
    python bench/bench_train.py --steps 2 --batch 32    # quicker
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


def measure(model: str, batch: int, steps: int, channels_last: bool) -> float:
    """Images/s over `steps` training steps after one warm-up step, on the CPU."""
    cfg = TrainConfig(model={"name": model}, batch_size=batch, channels_last=channels_last, device="cpu")
    device = torch.device("cpu")
    whitening = load_whitening("v1")
    info = DatasetInfo(whitening, "bench", CropConvention.V1)
    net = build_model(cfg, device)
    loss = build_loss(cfg, info, torch.Generator().manual_seed(0), device)
    optimizer = build_optimizer(cfg, net)
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": torch.from_numpy(rng.standard_normal((batch, 3, 120, 120), dtype=np.float32)),
            "params": torch.from_numpy(whitening.unwhiten(rng.standard_normal((batch, 62)).astype(np.float32))),
        }
        for _ in range(2)
    ]
    warm, timed = [batches[0]], [batches[i % 2] for i in range(steps)]
    state = TrainState()
    train_one_epoch(net, warm, loss, optimizer, state, device=device, amp=False, channels_last=channels_last)
    start = time.perf_counter()
    train_one_epoch(net, timed, loss, optimizer, state, device=device, amp=False, channels_last=channels_last)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobdensenet")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--one", action="store_true", help="measure one variant here and print JSON")
    args = parser.parse_args()
    if args.one:
        rate = measure(args.model, args.batch, args.steps, not args.no_channels_last)
        print(json.dumps({"images_per_s": rate}))
        return
    print(f"{args.model}, batch {args.batch}, {args.steps} timed steps, CPU: {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print("| GLIBC_TUNABLES | channels_last | images/s |\n|---|---|---|")
    for tunables in (False, True):
        for channels_last in (False, True):
            env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            if tunables:
                env["GLIBC_TUNABLES"] = TUNABLES
            command = [sys.executable, __file__, "--one", "--model", args.model, "--batch", str(args.batch),
                       "--steps", str(args.steps), *([] if channels_last else ["--no-channels-last"])]  # fmt: skip
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            rate = json.loads(out.strip().splitlines()[-1])["images_per_s"]
            print(f"| {'set' if tunables else 'unset'} | {'yes' if channels_last else 'no'} | {rate:.1f} |")


if __name__ == "__main__":
    main()
