"""The PyTorch fallback loader: `webdataset` streams the tars, `DataLoader` workers decode with OpenCV.

Used where DALI is not importable, or on request (`loader: torch`). It reads the same rank range as the DALI
pipeline (`shardset.plan_epoch`), so a rank sees the same samples with the same labels whichever loader runs.

Why every worker reads the whole rank range: the batch sequence must not depend on the number of workers, and a
resumed epoch must continue with exactly the batches an uninterrupted one would have produced. So each worker
streams the rank's samples as raw bytes (cheap: about 6 kB a sample), runs the same seeded shuffle buffer and
cuts the same batches, and decodes only its own: worker w of n decodes batches start_step + w, + w + n, ...
`DataLoader` collects worker outputs round-robin in that same order, so the batches come out in sequence.
Skipped batches (before `start_step`) and other workers' batches are never decoded.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from r3fa.io import decode_image
from r3fa.loaders.shardset import (
    AUGMENT,
    IMAGE_EXT,
    LANDMARKS_EXT,
    PARAMS_EXT,
    PIXEL_MEAN,
    PIXEL_SCALE,
    SHUFFLE_BUFFER,
    EpochPlan,
    PlannedEpoch,
    derive_seed,
    empty_batch,
)

Sample = dict[str, Any]
# Workers are forked, whatever the process's default: a rank started by `torch.multiprocessing.spawn` inherits
# "spawn", and spawned workers re-import torch (seconds per epoch, since a loader lives for one epoch). The
# workers only decode JPEGs into CPU tensors and never touch CUDA, which is what makes forking safe.
_WORKER_START = "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def _forget_parent_exit_hooks(_worker_id: int) -> None:
    """A forked worker must not run the thread-exit hooks it inherited from its parent.

    Prefect 3.8's queue services register one in the parent and reset their state after a fork, so in the
    child the hook fails an assertion when the worker exits: inside a Prefect flow (or after any flow ran
    in the process) every worker would end with exit code 1 and DataLoader would raise at the end of an
    epoch. The workers only decode JPEGs; the parent's services are the parent's to drain.
    """
    threading._threading_atexits.clear()  # noqa: SLF001 (no public API to unregister)


def _rank_samples(plan: EpochPlan) -> Iterator[Sample]:
    """The raw samples of global indices [plan.begin, plan.end), shards in the epoch's order."""
    first = 0
    urls, skip = [], 0
    for shard in plan.shards:
        last = first + shard.count
        if last > plan.begin and first < plan.end:
            if not urls:
                skip = plan.begin - first
            urls.append(str(shard.tar))
        first = last
    stream = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples())
    for i, sample in enumerate(stream):
        if i >= skip + plan.end - plan.begin:
            return
        if i >= skip:
            yield sample


def _shuffled(samples: Iterator[Sample], seed: int, buffer: int = SHUFFLE_BUFFER) -> Iterator[Sample]:
    """A seeded shuffle buffer: fill `buffer` samples, then emit a random one for each sample read."""
    rng = random.Random(seed)
    pool: list[Sample] = []
    for sample in samples:
        pool.append(sample)
        if len(pool) >= buffer:
            j = rng.randrange(len(pool))
            pool[j], pool[-1] = pool[-1], pool[j]
            yield pool.pop()
    rng.shuffle(pool)
    yield from pool


def _augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter, blur and noise (`shardset.AUGMENT`) on one BGR uint8 image; returns float32."""
    a = AUGMENT
    x = image.astype(np.float32) * rng.uniform(1 - a.brightness, 1 + a.brightness)
    grey = x @ np.array([0.114, 0.587, 0.299], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * rng.uniform(1 - a.saturation, 1 + a.saturation)
    x = (x - x.mean()) * rng.uniform(1 - a.contrast, 1 + a.contrast) + x.mean()
    if rng.random() < a.blur_prob:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(*a.blur_sigma))
    if rng.random() < a.noise_prob:
        x = x + rng.normal(0.0, rng.uniform(*a.noise_std), x.shape).astype(np.float32)
    return np.clip(x, 0, 255)


def _decode_batch(samples: list[Sample], rng: np.random.Generator | None) -> dict[str, Any]:
    """Decode one batch: OpenCV JPEG decode (BGR), optional augmentation, normalisation; labels as stored."""
    images = []
    for s in samples:
        image = decode_image(s[IMAGE_EXT], s["__key__"])
        images.append(_augment(image, rng) if rng is not None else image.astype(np.float32))
    image = (np.stack(images).transpose(0, 3, 1, 2) - PIXEL_MEAN) / PIXEL_SCALE
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        "params": torch.from_numpy(np.stack([np.frombuffer(s[PARAMS_EXT], "<f4") for s in samples])),
        "landmarks": torch.from_numpy(np.stack([np.frombuffer(s[LANDMARKS_EXT], "<f4") for s in samples])),
        "keys": [s["__key__"] for s in samples],
    }


class _EpochBatches(IterableDataset):
    """Batches [start_step, plan.steps) of one rank's epoch; each worker yields its round-robin share."""

    def __init__(self, plan: EpochPlan, start_step: int, augment: bool) -> None:
        self.plan = plan
        self.start_step = start_step
        self.augment = augment

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan = self.plan
        batch: list[Sample] = []
        step = 0
        stream = _shuffled(_rank_samples(plan), plan.shuffle_seed)
        while step < plan.steps:
            sample = next(stream, None)
            if sample is not None:
                batch.append(sample)
                if len(batch) < plan.batch_size:
                    continue
            if step >= self.start_step and (step - self.start_step) % workers == worker:
                if batch:
                    rng = np.random.default_rng(derive_seed(plan.augment_seed, step)) if self.augment else None
                    yield _decode_batch(batch, rng)
                else:
                    yield empty_batch()
            batch = []
            step += 1


@dataclass
class TorchLoader(PlannedEpoch):
    """One rank's epoch through `webdataset` + `DataLoader` (see the module docstring)."""

    num_workers: int

    def __iter__(self) -> Iterator[dict[str, Any]]:
        workers = min(self.num_workers, max(self.plan.steps - self.start_step, 0))
        loader = DataLoader(
            _EpochBatches(self.plan, self.start_step, self.augment),
            batch_size=None,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            multiprocessing_context=_WORKER_START if workers else None,
            worker_init_fn=_forget_parent_exit_hooks if workers else None,
        )
        for batch in loader:
            if self.device.type != "cpu":
                batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            yield batch
