"""The training configuration: one validated pydantic model for `configs/train/*.yaml`.

Everything that changes what a training run computes lives here (model, loss weights, optimiser and its
schedule, batch, epochs, seed, loader, checkpoint cadence), so that the resolved config written beside a
run's outputs is enough to reproduce it. Where the data is and where the outputs go are run arguments,
not config: the same config trains on any shard set.

Every number must be finite (`.inf` and `.nan` are refused), a learning rate positive; a learning rate that is
finite but far too high (`lr: 1e30`) validates, and is caught by the engine's divergence guard instead
(`max_nonfinite_steps`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from r3fa import models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(_Strict):
    """Which registry model to build (`r3fa.models.create(name, **kwargs)`)."""

    name: str = "mobdensenet"
    kwargs: dict = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in models.available():
            raise ValueError(f"unknown model {name!r}: expected one of {', '.join(models.available())}")
        return name


class LossSpec(_Strict):
    """Weights of the paper's loss terms (DESIGN §3): total = wpdc * WPDC + wing * Wing."""

    wpdc: float = Field(0.5, ge=0)
    wing: float = Field(1.0, ge=0)


class OptimSpec(_Strict):
    """Adam with a step schedule: lr is multiplied by `gamma` after each epoch listed in `milestones`."""

    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    milestones: list[int] = Field(default_factory=lambda: [15, 25, 30])
    gamma: float = Field(0.2, gt=0)


class LoaderSpec(_Strict):
    """Arguments passed through to `r3fa.loaders.create_loader`.

    `kind` and `num_threads` decide how batches are produced, not which: a run may resume with them changed.
    `shuffle` and `sampling` decide the order: a run resumes only with them unchanged."""

    kind: Literal["auto", "dali", "torch"] = "auto"
    num_threads: int = Field(2, ge=0)  # DALI threads, or DataLoader workers (0: decode in this process)
    augment: bool = False
    # shuffle of the training epochs' canonical order (r3fa.loaders.order.SHUFFLES); validation is always global
    shuffle: Literal["global", "py1br"] = "global"
    # order of the training epochs: uniform, or pose_balanced (each |yaw| bin equally often, r3fa.sampling);
    # validation is always uniform
    sampling: Literal["uniform", "pose_balanced"] = "uniform"


class TrainConfig(_Strict):
    """A training run. The defaults are the paper's settings (`configs/train/paper.yaml`)."""

    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    loader: LoaderSpec = Field(default_factory=LoaderSpec)
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(40, ge=1)
    seed: int = Field(0, ge=0)
    checkpoint_every_steps: int = Field(500, ge=1)
    keep_epoch_checkpoints: bool = True
    val_split: str = "val"
    device: str = "auto"  # "auto" = cuda when available (this process's LOCAL_RANK), else cpu
    amp: bool = True  # bfloat16 autocast, on CUDA only
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn only where an op has none)
    sync_batchnorm: bool = True  # under DDP (world size > 1): BatchNorm statistics over the global batch
    max_nonfinite_steps: int = Field(0, ge=0)  # batches with a non-finite loss/gradient skipped before the run stops

    @model_validator(mode="after")
    def _milestones_sorted(self) -> "TrainConfig":
        if self.optim.milestones != sorted(set(self.optim.milestones)):
            raise ValueError(f"optim.milestones must be increasing and unique, got {self.optim.milestones}")
        return self
