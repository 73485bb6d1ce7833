"""How far are DALI's decoded images from the PyTorch fallback's (OpenCV)? (not a test)

Runs both loaders over the same epoch of a shard set without jitter (the same canonical order, so batch k of
each holds the same keys, checked) and prints one JSON line: the mean and largest absolute difference in grey
levels over all pixels, and the largest per-image mean. On the CPU both decode with libjpeg-turbo (expected:
identical); with `--device cuda` DALI decodes with nvJPEG ("mixed"), which may round differently.

    python bench/decode_agreement.py /tmp/demo-shards                  # DALI CPU vs OpenCV
    python bench/decode_agreement.py /tmp/demo-shards --device cuda    # nvJPEG vs OpenCV
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from r3fa.loaders import create_loader
from r3fa.shard_contract import PIXEL_SCALE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", type=Path, help="a shard set built by `r3fa shards build`")
    parser.add_argument("--split", default="train")
    parser.add_argument("--device", default="cpu", help='where DALI decodes: "cpu" or "cuda"')
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    threads = min(4, os.cpu_count() or 1)
    loaders = [
        create_loader(args.shards, args.split, args.batch_size, kind=kind, device=device, num_threads=threads)
        for kind, device in (("dali", args.device), ("torch", "cpu"))
    ]
    total, count, largest, worst_image, images = 0.0, 0, 0.0, 0.0, 0
    for dali_batch, torch_batch in zip(*loaders, strict=True):
        assert dali_batch["keys"] == torch_batch["keys"], "the loaders disagree on the order"
        diff = (dali_batch["image"].float().cpu() - torch_batch["image"].float()).abs() * PIXEL_SCALE
        total += float(diff.sum(dtype=torch.float64))
        count += diff.numel()
        largest = max(largest, float(diff.max()))
        worst_image = max(worst_image, float(diff.flatten(1).mean(1).max()))
        images += diff.shape[0]
    print(json.dumps({
        "dali_device": args.device,
        "images": images,
        "mean_abs_grey_levels": total / max(count, 1),
        "max_abs_grey_levels": largest,
        "worst_image_mean_abs_grey_levels": worst_image,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
