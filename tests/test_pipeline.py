"""The main job (`flows/pipeline.py`): its config, the fold check that keeps training and evaluation images
apart, and one real run on the tests' tiny configs through Prefect (build -> train -> evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli.demo import nme_table
from flows.pipeline import PipelineConfig, training_fold
from pipelines.mix import load_mix
from r3fa.config import load_config
from r3fa.paths import PROJECT_ROOT

TEST_MIX = PROJECT_ROOT / "configs/mix/test.yaml"


def test_demo_config_validates_and_trains_on_another_fold_than_it_evaluates() -> None:
    cfg = load_config(PROJECT_ROOT / "configs/demo.yaml", PipelineConfig)
    mix = load_mix(PROJECT_ROOT / cfg.mix)
    assert training_fold(mix, cfg.n_folds, cfg.eval_fold) != cfg.eval_fold


@pytest.mark.parametrize("eval_fold, n_folds", [(0, 2), (1, 3)])
def test_a_mix_that_overlaps_the_evaluation_fold_is_refused(eval_fold: int, n_folds: int) -> None:
    with pytest.raises(ValueError, match="not disjoint"):
        training_fold(load_mix(TEST_MIX), n_folds, eval_fold)


@pytest.mark.slow
def test_the_pipeline_builds_trains_and_evaluates_on_the_held_out_fold(tmp_path: Path) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline_flow

    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "mix": str(TEST_MIX), "train": "configs/train/test.yaml",
        "build_workers": 0, "eval_fold": 1, "model_label": "tiny",
    }))  # fmt: skip
    with prefect_test_harness():
        result = pipeline_flow(str(config))

    reports = result["reports"]
    assert [r["model"]["name"] for r in reports] == ["tiny", "mean parameters (training set)", *["3DDFA-V2 mb05"] * 2]
    assert [r["evaluated_on"] for r in reports] == ["fold 1 of 2"] * 3 + ["full set"]
    assert [r["counts"]["total"] for r in reports] == [1000, 1000, 1000, 2000]
    for path in result["artifacts"].values():
        assert Path(path).exists(), path
    assert json.loads(Path(result["artifacts"]["nme.json (model, fold)"]).read_text())["evaluated_on"] == "fold 1 of 2"
    table = nme_table(reports)  # its cells, not its rendering (which depends on width)
    evaluated_on = list(next(column for column in table.columns if column.header == "evaluated on").cells)
    assert "fold 1 of 2" in evaluated_on and "full set" in evaluated_on
