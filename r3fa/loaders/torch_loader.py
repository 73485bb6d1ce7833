"""The PyTorch fallback loader: samples read by offset (`shardset.SampleReader`), decoded with OpenCV in
`DataLoader` workers.

Used where DALI is not importable, or on request (`loader: torch`). It reads exactly the positions of the
canonical order that `shardset.plan_epoch` gives this rank, so a rank sees the same samples, in the same
batches, with the same online jitter, whichever loader runs.

Worker w of n decodes steps w, w + n, ...; `DataLoader` collects worker outputs round-robin in that same order,
so the batches come out in sequence and do not depend on the number of workers. The indices are loaded and
checked in the parent before the workers fork, so a damaged shard fails before any batch, naming the shard.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from r3fa.io import decode_image
from r3fa.loaders.jitter import OnlineJitter, apply_jitter, draw_jitter
from r3fa.loaders.shardset import EpochPlan, PlannedEpoch, SampleReader, ShardDataError, empty_batch
from r3fa.shard_contract import normalise_pixels

# Workers are forked, whatever the process's default: a rank started by `torch.multiprocessing.spawn` inherits
# "spawn", and spawned workers re-import torch (seconds per epoch, since a loader lives for one epoch). The
# workers only decode JPEGs into CPU tensors and never touch CUDA, which is what makes forking safe.
_WORKER_START = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
_ERROR = "shard_data_error"


def _forget_parent_exit_hooks(_worker_id: int) -> None:
    """A forked worker must not run the thread-exit hooks it inherited from its parent.

    Prefect 3.8's queue services register one in the parent and reset their state after a fork, so in the
    child the hook fails an assertion when the worker exits: inside a Prefect flow (or after any flow ran
    in the process) every worker would end with exit code 1 and DataLoader would raise at the end of an
    epoch. The workers only decode JPEGs; the parent's services are the parent's to drain.
    """
    threading._threading_atexits.clear()  # noqa: SLF001 (no public API to unregister)


def read_batch(
    reader: SampleReader, plan: EpochPlan, step: int, jitter: OnlineJitter | None
) -> dict[str, Any] | None:
    """Read, decode, jitter and normalise this rank's batch of `step`; None when its share is empty."""
    positions, indices = plan.batch(step)
    if len(indices) == 0:
        return None
    samples = [reader.read(int(i)) for i in indices]
    images = []
    for position, sample in zip(positions.tolist(), samples):
        image = decode_image(sample.jpeg, sample.key)
        if jitter is None:
            images.append(image.astype(np.float32))
        else:
            images.append(apply_jitter(image, draw_jitter(jitter, plan.seed, plan.epoch, position)))
    image = normalise_pixels(np.stack(images).transpose(0, 3, 1, 2))
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        "params": torch.from_numpy(np.stack([s.params for s in samples])),
        "landmarks": torch.from_numpy(np.stack([s.landmarks for s in samples])),
        "keys": [s.key for s in samples],
        "positions": positions.tolist(),
    }


class _EpochBatches(IterableDataset):
    """The plan's batches; each worker yields its round-robin share."""

    def __init__(self, reader: SampleReader, plan: EpochPlan, jitter: OnlineJitter | None) -> None:
        self.reader, self.plan, self.jitter = reader, plan, jitter

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(worker, self.plan.part.steps, workers):
            try:
                yield read_batch(self.reader, self.plan, step, self.jitter) or empty_batch()
            except ShardDataError as err:  # crosses the worker boundary as a value: DataLoader would add its traceback
                yield {_ERROR: str(err)}
                return


@dataclass
class TorchLoader(PlannedEpoch):
    """One rank's epoch through `DataLoader` workers (see the module docstring)."""

    num_workers: int

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if len(self) == 0:
            return
        workers = min(self.num_workers, len(self))
        with self.reader() as reader:
            loader = DataLoader(
                _EpochBatches(reader, self.plan, self.jitter),
                batch_size=None,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                prefetch_factor=4 if workers else None,
                multiprocessing_context=_WORKER_START if workers else None,
                worker_init_fn=_forget_parent_exit_hooks if workers else None,
            )
            for batch in loader:
                if _ERROR in batch:
                    raise ShardDataError(batch[_ERROR])
                if self.device.type != "cpu":
                    batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                yield batch
