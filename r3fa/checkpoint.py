"""Checkpoint files: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a dict of plain types and tensors. Every r3fa checkpoint carries what is needed to use
the model without its training run: `format`, `model` {`name`, `kwargs`}, `state_dict`, `whitening`
(`Whitening.to_dict()`), `crop_convention`, and `meta` (dataset manifest hash, code version, ...).
Training checkpoints add `train_state` (optimiser, scheduler, epoch, step, `samples_consumed` of the epoch,
`sample_order`: what fixes the order, so that a run resumes on any world size or loader kind, RNG).

Nothing broken is ever written: `save_checkpoint` refuses a payload whose `state_dict` holds a NaN or an
infinity (`NonFiniteCheckpointError`), so a diverged run cannot leave a `model.pth` or a `last.pth` behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from r3fa.atomic import atomic_writer
from r3fa.crop import CropConvention
from r3fa.errors import UserError
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


class NonFiniteCheckpointError(UserError):
    """A checkpoint was about to be written with non-finite weights (the run diverged)."""


def nonfinite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of `state_dict` that hold a NaN or an infinity."""
    return [
        name
        for name, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` atomically: temporary file, fsync, rename.

    Raises:
        NonFiniteCheckpointError: a tensor of `payload["state_dict"]` is not finite (nothing is written).
    """
    broken = nonfinite_tensors(payload.get("state_dict", {}))
    if broken:
        more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
        raise NonFiniteCheckpointError(
            f"refusing to write {path}: tensor {broken[0]}{more} holds non-finite values (the run diverged; "
            "lower optim.lr)"
        )
    with atomic_writer(path) as fh:
        torch.save(payload, fh)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (any `.pth`) without unpickling code.

    Raises:
        UserError: `path` is not a file, or not a checkpoint `torch.load(weights_only=True)` can read (text,
            truncated, a pickle of code): whatever the unpickler raises becomes one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (expected a .pth file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the unpickler's and the zip reader's errors are many; all mean "not a checkpoint"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason})") from err


def is_r3fa_checkpoint(payload: dict) -> bool:
    return isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT
