"""Loading YAML configs into pydantic models, and writing the resolved config beside a run's outputs.

Every config file under `configs/` is validated by a pydantic model defined next to the code that uses it;
this module is the one place that reads and writes them. A config that cannot be used (missing, unreadable,
not YAML, not a mapping, or not valid for its model) is a caller's mistake: `load_config` raises
`r3fa.errors.UserError` with one line that names the file and the first problem
(`config.yaml: optim.lr: Input should be greater than 0`), never a parser's traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from r3fa.atomic import write_text_atomic
from r3fa.errors import UserError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def describe_validation_error(error: ValidationError, source: str | Path | None = None) -> str:
    """One line for a pydantic error: `source: field.path: message` of its first problem (+ how many more)."""
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": str(error)}
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    prefix = f"{source}: " if source is not None else f"{error.title}: "
    return f"{prefix}{where}: {first['msg']}{more}"


def read_yaml_mapping(path: str | Path) -> dict:
    """The YAML mapping in `path` (an empty file is an empty mapping).

    Raises:
        UserError: the file is missing, unreadable, not UTF-8 text, not YAML, or not a mapping at the top.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config not found (expected a YAML file)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"{path}: cannot read the config: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a YAML config (not UTF-8 text)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a YAML mapping of fields, found a {type(raw).__name__}")
    return raw


def load_config(path: str | Path, model: type[ConfigT], **overrides: object) -> ConfigT:
    """Read YAML at `path`, apply top-level `overrides` (None values ignored), validate with `model`.

    Raises:
        UserError: the file cannot be read as a mapping (`read_yaml_mapping`) or does not validate.
    """
    raw = read_yaml_mapping(path)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, path)) from None


# libyaml's emitter when PyYAML has it: the same text as `yaml.safe_dump` (every mix config compared), ~4x faster
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_resolved(config: BaseModel, out_dir: str | Path, name: str = "config.resolved.yaml") -> Path:
    """Write the fully resolved config as YAML into `out_dir` (atomically)."""
    text = yaml.dump(config.model_dump(mode="json"), Dumper=_DUMPER, sort_keys=False)
    return write_text_atomic(Path(out_dir) / name, text)
