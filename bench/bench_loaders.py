"""Do the loaders keep up with training? Images/s of the DALI loader and the PyTorch fallback over a shard set,
next to MobDenseNet's training-step images/s at the same batch size on the same device.

The goal (issue 6): the DALI loader at least 3x the training step's rate, so that it never starves training.
Each loader runs whole epochs (pipeline start-up included, and also reported without the first batch); the
training step is forward + backward + Adam on random inputs (an MSE loss on the 62 outputs: the loss's own cost
is not the point here).

Example:
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296 \\
        .venv/bin/python bench/bench_loaders.py /tmp/bench-shards --batch-size 128 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from r3fa.loaders import create_loader


def loader_rate(
    shard_dir: Path, kind: str, batch_size: int, threads: int, epochs: int, device: str, augment: bool
) -> dict:
    """Images/s of `epochs` epochs of one loader: overall, and from the second batch on (steady state)."""
    images, seconds, steady_images, steady_seconds = 0, 0.0, 0, 0.0
    for epoch in range(epochs):
        loader = create_loader(
            shard_dir, "train", batch_size, kind=kind, epoch=epoch, num_threads=threads, device=device, augment=augment
        )
        start = time.perf_counter()
        first = None
        for batch in loader:
            n = batch["image"].shape[0]
            images += n
            if first is None:
                first = time.perf_counter()
            else:
                steady_images += n
        end = time.perf_counter()
        seconds += end - start
        steady_seconds += end - first
    return {"images": images, "rate": images / seconds, "steady": steady_images / max(steady_seconds, 1e-9)}


def train_step_rate(batch_size: int, steps: int, device: str) -> float:
    """MobDenseNet training steps (forward, backward, Adam) per second x batch size, channels_last."""
    from r3fa.models import create

    model = create("mobdensenet").to(device).to(memory_format=torch.channels_last).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, 120, 120, device=device).to(memory_format=torch.channels_last)
    y = torch.randn(batch_size, 62, device=device)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        out = model(x)
        loss = torch.nn.functional.mse_loss(out, y)
        loss.backward()
        optimiser.step()

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", type=Path, help="a shard set built by `r3fa shards build` (train split used)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="DALI threads and DataLoader workers")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per loader")
    parser.add_argument("--train-steps", type=int, default=10, help="timed MobDenseNet training steps")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    rates = {
        (kind, augment): loader_rate(
            args.shards, kind, args.batch_size, args.threads, args.epochs, args.device, augment
        )
        for kind in ("dali", "torch")
        for augment in (False, True)
    }
    try:
        train = train_step_rate(args.batch_size, args.train_steps, args.device)
    except ImportError as err:
        train = None
        print(f"training step not measured: {err}")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device}")
    print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
    print(f"batch {args.batch_size}, {args.threads} threads/workers, {args.epochs} epochs per loader")
    print("| what | images | img/s (whole epochs) | img/s (after first batch) | x train step |")
    print("|---|---|---|---|---|")
    for (kind, augment), r in rates.items():
        ratio = f"{r['rate'] / train:.1f}x" if train else "n/a"
        name = f"loader {kind}, augment {'on' if augment else 'off'}"
        print(f"| {name} | {r['images']} | {r['rate']:.0f} | {r['steady']:.0f} | {ratio} |")
    if train is not None:
        name = f"MobDenseNet train step (batch {args.batch_size})"
        print(f"| {name} | {args.train_steps * args.batch_size} | {train:.0f} | | 1.0x |")


if __name__ == "__main__":
    main()
