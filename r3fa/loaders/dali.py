"""The DALI loader: samples read by offset in an `fn.external_source` (`shardset.SampleReader`), JPEG decode on
the GPU (`device="mixed"`) when training on CUDA and on the CPU otherwise (`device_id=None`), the online jitter,
normalisation, and `DALIGenericIterator`.

Why an external source rather than `fn.readers.webdataset`: DALI's reader can only shuffle inside a buffer and
shard by contiguous ranges, so its order would depend on the world size and could not resume on another one.
The external source serves exactly the positions of the canonical order that `shardset.plan_epoch` gives this
rank (the same as the PyTorch fallback), one batch per pipeline iteration (`batch_info.iteration` = step), with
the labels as stored and the per-sample jitter draws of `r3fa.loaders.jitter`; DALI decodes and applies the
jitter with the same formula as the numpy reference:
colour matrix (`fn.coord_transform`), contrast around the image mean (`fn.reductions.mean`), blur and noise under
DALI conditionals (only the samples that drew them), clamp.

A rank's share of a partial last global batch can be empty (only without `drop_last`): that step yields
`shardset.empty_batch` without running the pipeline (DALI has no empty batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from nvidia.dali import fn, math, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from r3fa.loaders.jitter import OnlineJitter, blur_window, draw_jitter
from r3fa.loaders.shardset import EpochPlan, PlannedEpoch, SampleReader, empty_batch
from r3fa.shard_contract import IMAGE_SIZE, PIXEL_MEAN, PIXEL_SCALE

_OUTPUTS = ["image", "params", "landmarks", "index", "position"]
_NO_NOISE = np.zeros((1, 1, 3), np.float32)


class _BatchSource:
    """The external source: for iteration k, this rank's samples of step k (bytes, labels, jitter draws)."""

    def __init__(self, reader: SampleReader, plan: EpochPlan, steps: int, jitter: OnlineJitter | None) -> None:
        self.reader, self.plan, self.steps, self.jitter = reader, plan, steps, jitter

    def __call__(self, info: Any) -> tuple[list[np.ndarray], ...]:
        if info.iteration >= self.steps:
            raise StopIteration
        positions, indices = self.plan.batch(info.iteration)
        samples = [self.reader.read(int(i)) for i in indices]
        out: tuple[list[np.ndarray], ...] = (
            [np.frombuffer(s.jpeg, np.uint8) for s in samples],
            [s.params for s in samples],
            [s.landmarks for s in samples],
            [np.array([i], np.int64) for i in indices],
            [np.array([p], np.int64) for p in positions],
        )
        if self.jitter is None:
            return out
        draws = [draw_jitter(self.jitter, self.plan.seed, self.plan.epoch, int(p)) for p in positions]
        shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
        return out + (
            [d.colour_matrix() for d in draws],
            [np.float32(d.contrast) for d in draws],
            [np.array(d.blur_sigma > 0) for d in draws],
            [np.float32(max(d.blur_sigma, 1e-3)) for d in draws],
            [np.int32(blur_window(max(d.blur_sigma, 1e-3))) for d in draws],
            [np.array(d.noise_std > 0) for d in draws],
            [d.noise(shape) if d.noise_std > 0 else _NO_NOISE for d in draws],
        )


def _jitter(images: Any, matrix: Any, contrast: Any, blur: Any, sigma: Any, window: Any, noisy: Any, noise: Any, gpu: bool) -> Any:
    """`r3fa.loaders.jitter.apply_jitter`'s maths on a batch of decoded BGR images; returns float32 HWC."""
    x = fn.coord_transform(fn.cast(images, dtype=types.FLOAT), M=matrix, dtype=types.FLOAT)
    mean = fn.reductions.mean(x)
    x = (x - mean) * (contrast.gpu() if gpu else contrast) + mean
    if blur:
        x = fn.gaussian_blur(x, sigma=sigma, window_size=window)
    if noisy:
        x = x + (noise.gpu() if gpu else noise)
    return math.clamp(x, 0.0, 255.0)


@pipeline_def(enable_conditionals=True)
def _pipeline(source: _BatchSource, gpu: bool, jitter: bool) -> Any:
    outputs = fn.external_source(source, num_outputs=12 if jitter else 5, batch=True, batch_info=True)
    jpegs, params, landmarks, index, position = outputs[:5]
    images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.BGR)
    if jitter:
        images = _jitter(images, *outputs[5:], gpu=gpu)
    images = fn.crop_mirror_normalize(
        images, dtype=types.FLOAT, output_layout="CHW", mean=[PIXEL_MEAN] * 3, std=[PIXEL_SCALE] * 3
    )
    if gpu:
        params, landmarks = params.gpu(), landmarks.gpu()
    return images, params, landmarks, index, position


@dataclass
class DaliLoader(PlannedEpoch):
    """One rank's epoch through a DALI pipeline (see the module docstring)."""

    num_threads: int

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if len(self) == 0:
            return
        with self.reader() as reader:
            # only the last step can be empty (a partial global batch smaller than the world size)
            full = len(self) - (len(self.plan.batch(len(self) - 1)[1]) == 0)
            if full:
                yield from self._batches(reader, full)
        if full < len(self):
            yield empty_batch(self.device)

    def _batches(self, reader: SampleReader, steps: int) -> Iterator[dict[str, Any]]:
        gpu = self.device.type == "cuda"
        gpu_index = self.device.index if self.device.index is not None else torch.cuda.current_device() if gpu else None
        pipe = _pipeline(
            _BatchSource(reader, self.plan, steps, self.jitter),
            gpu,
            self.jitter is not None,
            batch_size=self.plan.batch_size,
            num_threads=max(1, self.num_threads),
            device_id=gpu_index,
            prefetch_queue_depth=2,
        )
        iterator = DALIGenericIterator(pipe, _OUTPUTS, last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False)
        try:
            for (out,) in iterator:
                indices = out["index"].reshape(-1).tolist()
                yield {
                    "image": out["image"],
                    "params": out["params"],
                    "landmarks": out["landmarks"],
                    "keys": [reader.key(i) for i in indices],
                    "positions": out["position"].reshape(-1).tolist(),
                }
        finally:
            del iterator, pipe
