"""The DALI loader: `fn.readers.webdataset` over the builder's tars and indices, JPEG decode on the GPU
(`device="mixed"`) when training on CUDA and on the CPU otherwise (`device_id=None`), label-safe augmentations,
normalisation, and `DALIGenericIterator(reader_name="Reader")` so that the epoch size is exact.

One pipeline per (epoch, rank): the shard order of the epoch and this rank's range come from
`shardset.plan_epoch` (DALI's `shard_id` / `num_shards` split the global sample index over the shards in that
order, the same formula the PyTorch fallback reproduces). The reader's shuffle buffer and the augmentations are
seeded from (seed, epoch, rank), so an epoch is a pure function of those.

Keys: the reader does not output the sample key, but every sample's `source_info` property reads
`ARCHIVE.tar:OFFSET:KEY.jpg`; `fn.get_property` turns it into a byte tensor (zero-padded to the batch's
longest) and `shardset.key_from_member` parses the key from it.

Resume: DALI has no "start at step k" for a reader, so `start_step` batches are run and discarded. That keeps
the resumed batches identical to an uninterrupted epoch, augmentations included, at the cost of decoding the
skipped batches once (about a second per 7,000 images on two CPU threads, much less on a GPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from nvidia.dali import fn, math, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

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
    empty_batch,
    key_from_member,
)

READER_NAME = "Reader"
_OUTPUTS = ["image", "params", "landmarks", "source_info"]


def _augment(images: Any) -> Any:
    """Colour jitter, blur and noise (`shardset.AUGMENT`) on decoded BGR images; returns float32 HWC."""
    a = AUGMENT
    x = fn.color_twist(
        images,
        brightness=fn.random.uniform(range=(1 - a.brightness, 1 + a.brightness)),
        contrast=fn.random.uniform(range=(1 - a.contrast, 1 + a.contrast)),
        saturation=fn.random.uniform(range=(1 - a.saturation, 1 + a.saturation)),
        image_type=types.BGR,
        dtype=types.FLOAT,
    )
    # DALI conditionals split the batch: blur and noise run only on the samples that drew them (Gaussian noise
    # costs ~1.4 ms per 120x120 image on one CPU thread, more than decoding).
    if fn.random.coin_flip(probability=a.blur_prob, dtype=types.BOOL):
        x = fn.gaussian_blur(x, sigma=fn.random.uniform(range=a.blur_sigma))
    if fn.random.coin_flip(probability=a.noise_prob, dtype=types.BOOL):
        x = fn.noise.gaussian(x, stddev=fn.random.uniform(range=a.noise_std))
    return math.clamp(x, 0.0, 255.0)


@pipeline_def(enable_conditionals=True)
def _pipeline(plan: EpochPlan, rank: int, world_size: int, gpu: bool, augment: bool, drop_last: bool) -> Any:
    jpegs, params, landmarks = fn.readers.webdataset(
        name=READER_NAME,
        paths=[str(s.tar) for s in plan.shards],
        index_paths=[str(s.index) for s in plan.shards],
        ext=[IMAGE_EXT, PARAMS_EXT, LANDMARKS_EXT],
        dtypes=[types.UINT8, types.FLOAT, types.FLOAT],
        missing_component_behavior="error",
        shard_id=rank,
        num_shards=world_size,
        random_shuffle=True,
        initial_fill=SHUFFLE_BUFFER,
        seed=plan.shuffle_seed,
        pad_last_batch=not drop_last,
    )
    source_info = fn.pad(fn.get_property(jpegs, key="source_info"), fill_value=0)
    images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.BGR)
    if augment:
        images = _augment(images)
    images = fn.crop_mirror_normalize(
        images, dtype=types.FLOAT, output_layout="CHW", mean=[PIXEL_MEAN] * 3, std=[PIXEL_SCALE] * 3
    )
    if gpu:
        params, landmarks = params.gpu(), landmarks.gpu()
    return images, params, landmarks, source_info


def _keys(source_info: torch.Tensor) -> list[str]:
    """Sample keys from the zero-padded `source_info` bytes of a batch."""
    rows = source_info.cpu().numpy().astype(np.uint8)
    return [key_from_member(row.tobytes().rstrip(b"\0").decode()) for row in rows]


@dataclass
class DaliLoader(PlannedEpoch):
    """One rank's epoch through a DALI pipeline (see the module docstring)."""

    rank: int
    world_size: int
    num_threads: int
    drop_last: bool

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.start_step >= self.plan.steps:
            return
        gpu = self.device.type == "cuda"
        gpu_index = self.device.index if self.device.index is not None else torch.cuda.current_device() if gpu else None
        pipe = _pipeline(
            self.plan,
            self.rank,
            self.world_size,
            gpu,
            self.augment,
            self.drop_last,
            batch_size=self.plan.batch_size,
            num_threads=self.num_threads,
            device_id=gpu_index,
            seed=self.plan.augment_seed,
        )
        policy = LastBatchPolicy.DROP if self.drop_last else LastBatchPolicy.PARTIAL
        iterator = DALIGenericIterator(pipe, _OUTPUTS, reader_name=READER_NAME, last_batch_policy=policy)
        try:
            for step, (out,) in enumerate(iterator):
                if step >= self.plan.steps:
                    break
                if step < self.start_step:
                    continue
                if out["image"].shape[0] == 0:
                    yield empty_batch(self.device)
                    continue
                yield {
                    "image": out["image"],
                    "params": out["params"],
                    "landmarks": out["landmarks"],
                    "keys": _keys(out["source_info"]),
                }
        finally:
            del iterator, pipe
