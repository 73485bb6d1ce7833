"""The experiment grid: one YAML (`configs/experiments/*.yaml`) validated by `ExperimentConfig`.

A variant is a mix config and a training config, each optionally changed by dotted overrides
(`augmentation.copies_per_image: 1`, `optim.lr: 0.01`, `synthesis: null`), so that a grid states only what
differs from the base configs. Every variant is trained with each seed for the same budget of optimiser steps:
`resolve_train` turns the budget into a whole number of epochs for the variant's train split and scales the
learning-rate milestones with it, so a small mix is not under-trained and a large one not favoured.

This module knows nothing of how shards are built: a mix is handled as the raw mapping that
`pipelines.mix.MixConfig` validates above this layer.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from r3fa.config import describe_validation_error, read_yaml_mapping
from r3fa.errors import UserError
from r3fa.loaders import create_loader
from r3fa.paths import PROJECT_ROOT
from r3fa.train_config import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Variant(_Strict):
    """One cell of the grid.

    Attributes:
        name: folder and row name (letters, digits, '-', '_').
        mix: the mix config; the experiment's base `mix` when None.
        train: the training config; the experiment's base `train` when None.
        mix_overrides: dotted field -> value, applied to the mix (`synthesis: null` drops synthesis).
        train_overrides: dotted field -> value, applied to the training config (`optim.lr: 0.01`).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    mix: Path | None = None
    train: Path | None = None
    mix_overrides: dict[str, Any] = Field(default_factory=dict)
    train_overrides: dict[str, Any] = Field(default_factory=dict)


class Bootstrap(_Strict):
    """The paired bootstrap over evaluation images: resamples and its generator's seed (fixed: same report)."""

    samples: int = Field(2000, ge=100)
    seed: int = Field(0, ge=0)


class ExperimentConfig(_Strict):
    """A grid of variants x seeds, its step budget, and where it is evaluated.

    Relative paths are taken from the project root. The checkpoint of every run is chosen on the validation
    split of its own shard set (`metrics.csv`, column `val_nme`); the benchmark fold is read only to evaluate
    the chosen checkpoint.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    out_dir: Path
    mix: Path
    train: Path
    variants: list[Variant] = Field(min_length=1)
    reference: str | None = None  # the variant the others are compared with (default: the first)
    seeds: list[int] = Field(min_length=1)
    steps: int = Field(ge=1)  # optimiser steps per run, the same for every variant
    benchmark: str = "aflw2000-3d"
    eval_fold: int | None = Field(1, ge=0)
    n_folds: int = Field(2, ge=2)
    eval_batch_size: int = Field(128, ge=1)
    build_workers: int = Field(2, ge=0)
    bootstrap: Bootstrap = Field(default_factory=Bootstrap)

    @model_validator(mode="after")
    def _check(self) -> "ExperimentConfig":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be unique and non-negative, got {self.seeds}")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"reference {self.reference!r} is not a variant ({names})")
        return self

    @property
    def reference_name(self) -> str:
        """The reference variant's name."""
        return self.reference or self.variants[0].name


def in_project(path: Path) -> Path:
    """`path` taken from the project root when relative."""
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_experiment(path: str | Path, out_dir: str | Path | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML; `out_dir` replaces its output folder when given.

    Raises:
        UserError: the file is unreadable or invalid, or a config it names does not exist.
    """
    raw = read_yaml_mapping(path)
    if out_dir is not None:
        raw["out_dir"] = str(out_dir)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, path)) from None
    for variant in cfg.variants:
        for config in (variant.mix or cfg.mix, variant.train or cfg.train):
            if not in_project(config).is_file():
                raise UserError(f"{path}: variant {variant.name!r} names {config}, which does not exist")
        variant_train(cfg, variant)  # a bad override fails now, not after hours of other runs
    return cfg


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `raw` with each dotted key set (`optim.lr` sets raw["optim"]["lr"]).

    Raises:
        UserError: a key walks through a value that is not a mapping.
    """
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {dotted!r}: {part!r} is not a section (it holds {child!r})")
            node = child
        node[leaf] = copy.deepcopy(value)
    return out


def variant_mix(cfg: ExperimentConfig, variant: Variant) -> dict[str, Any]:
    """The raw mix mapping of `variant` (base or its own file, overrides applied); validated by the caller."""
    return apply_overrides(read_yaml_mapping(in_project(variant.mix or cfg.mix)), variant.mix_overrides)


def mix_key(mix: dict[str, Any]) -> str:
    """A short hash of a mix mapping: the name of its shard-set folder (same mix => same folder)."""
    return hashlib.sha256(json.dumps(mix, sort_keys=True, default=str).encode()).hexdigest()[:12]


def epochs_for_budget(steps: int, steps_per_epoch: int) -> int:
    """Whole epochs closest to `steps` optimiser steps (at least one): the run's steps differ from the
    budget by at most half an epoch."""
    if steps_per_epoch < 1:
        raise UserError("the train split holds less than one batch: lower batch_size or enlarge the mix")
    return max(1, round(steps / steps_per_epoch))


def variant_train(cfg: ExperimentConfig, variant: Variant) -> TrainConfig:
    """The validated training config of `variant` (its file or the base, overrides applied).

    Raises:
        UserError: it does not validate.
    """
    source = in_project(variant.train or cfg.train)
    raw = apply_overrides(read_yaml_mapping(source), variant.train_overrides)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, f"{source} (variant {variant.name})")) from None


def train_steps_per_epoch(shard_dir: Path, batch_size: int) -> int:
    """Optimiser steps of one training epoch on `shard_dir` (one process): what the training loop runs."""
    return len(create_loader(shard_dir, "train", batch_size, kind="torch", num_threads=0))


def resolve_train(cfg: ExperimentConfig, variant: Variant, seed: int, shard_dir: Path) -> TrainConfig:
    """The training config of one run: overrides, the seed, epochs from the step budget, milestones scaled.

    The base config's milestones are fractions of its own epochs; they keep those fractions of the new epoch
    count (rounded, at least epoch 1, duplicates dropped). Epoch checkpoints are always kept, since the
    checkpoint is chosen among them on the validation split.

    Raises:
        UserError: the resulting config does not validate.
    """
    base = variant_train(cfg, variant)
    epochs = epochs_for_budget(cfg.steps, train_steps_per_epoch(shard_dir, base.batch_size))
    milestones = sorted({max(1, round(m * epochs / base.epochs)) for m in base.optim.milestones if m < base.epochs})
    optim = base.optim.model_copy(update={"milestones": [m for m in milestones if m < epochs]})
    return base.model_copy(update={"seed": seed, "epochs": epochs, "optim": optim, "keep_epoch_checkpoints": True})


def config_hash(*documents: Any) -> str:
    """sha256 of JSON documents (pydantic models dumped): what a run's done marker records."""
    parts = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in documents]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
