"""The training configs validate, and `paper.yaml` holds the paper's settings (DESIGN §3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from r3fa.config import load_config, write_resolved
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
    [{"epochs": 0}, {"optim": {"milestones": [25, 15]}}, {"learning_rate": 0.1}, {"loader": {"kind": "pil"}}],
)
def test_invalid_configs_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        TrainConfig.model_validate(bad)
