"""The training configs validate, and `paper.yaml` holds the paper's settings (DESIGN §3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from r3fa.config import load_config, write_resolved
from r3fa.errors import UserError
from r3fa.paths import PROJECT_ROOT
from r3fa.train_config import TrainConfig

CONFIGS = sorted((PROJECT_ROOT / "configs" / "train").glob("*.yaml"))


def test_paper_config_is_the_papers_schedule() -> None:
    cfg = load_config(PROJECT_ROOT / "configs/train/paper.yaml", TrainConfig)
    assert cfg.model.name == "mobdensenet"
    assert (cfg.loss.wpdc, cfg.loss.wing) == (0.5, 1.0)
    assert (cfg.optim.lr, cfg.optim.milestones, cfg.optim.gamma) == (0.01, [15, 25, 30], 0.2)
    assert (cfg.batch_size, cfg.epochs) == (128, 40)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates_and_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path, TrainConfig)
    assert load_config(write_resolved(cfg, tmp_path), TrainConfig) == cfg


@pytest.mark.parametrize(
    "bad",
    [{"epochs": 0}, {"optim": {"milestones": [25, 15]}}, {"learning_rate": 0.1}, {"loader": {"kind": "pil"}},
     {"optim": {"lr": float("inf")}}, {"optim": {"lr": float("nan")}}, {"optim": {"lr": -1}}, {"optim": {"lr": 0}},
     {"seed": -5}, {"max_nonfinite_steps": -1}, {"loss": {"wing": float("inf")}}, {"model": {"name": "nope"}}],
)  # fmt: skip
def test_invalid_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        TrainConfig.model_validate(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [("optim: {lr: .inf}\n", "optim.lr: Input should be a finite number"),
     ("optim: {lr: -1}\n", "optim.lr: Input should be greater than 0"),
     ("seed: -5\n", "seed: Input should be greater than or equal to 0"),
     ("- 1\n- 2\n", "a config must be a YAML mapping of fields, found a list"),
     ("42\n", "found a int"),
     ("optim: {lr: [\n", "malformed YAML at line"),
     (b"\xff\xfe\x00binary", "not UTF-8 text")],
)  # fmt: skip
def test_a_bad_config_file_is_one_user_error_naming_the_file_and_field(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError) as caught:
        load_config(path, TrainConfig)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_config_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config not found"):
        load_config(tmp_path / "nope.yaml", TrainConfig)
