"""Loading YAML configs into pydantic models, and writing the resolved config beside a run's outputs.

Every config file under `configs/` is validated by a pydantic model defined next to the code that uses it;
this module is the one place that reads and writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel

from r3fa.atomic import write_text_atomic

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_config(path: str | Path, model: type[ConfigT], **overrides: object) -> ConfigT:
    """Read YAML at `path`, apply top-level `overrides` (None values ignored), validate with `model`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return model.model_validate(raw)


def write_resolved(config: BaseModel, out_dir: str | Path, name: str = "config.resolved.yaml") -> Path:
    """Write the fully resolved config as YAML into `out_dir` (atomically)."""
    return write_text_atomic(Path(out_dir) / name, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
