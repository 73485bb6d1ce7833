"""Checkpoint files: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a dict of plain types and tensors. Every r3fa checkpoint carries what is needed to use
the model without its training run: `format`, `model` {`name`, `kwargs`}, `state_dict`, `whitening`
(`Whitening.to_dict()`), `crop_convention`, and `meta` (dataset manifest hash, code version, ...).
Training checkpoints add `train_state` (optimiser, scheduler, loader position, epoch, step, RNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from r3fa.atomic import atomic_writer
from r3fa.crop import CropConvention
from r3fa.params import Whitening

CHECKPOINT_FORMAT = "r3fa-checkpoint-v1"


def model_payload(
    model_name: str,
    model_kwargs: dict,
    state_dict: dict,
    whitening: Whitening,
    convention: CropConvention,
    meta: dict | None = None,
) -> dict[str, Any]:
    """The part of a checkpoint that inference needs."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": {"name": model_name, "kwargs": dict(model_kwargs)},
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "whitening": whitening.to_dict(),
        "crop_convention": CropConvention(convention).value,
        "meta": dict(meta or {}),
    }


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` atomically: temporary file, fsync, rename."""
    with atomic_writer(path) as fh:
        torch.save(payload, fh)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (any `.pth`) without unpickling code."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def is_r3fa_checkpoint(payload: dict) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT
