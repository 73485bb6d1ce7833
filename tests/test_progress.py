"""Progress reports (issue 14): what training, evaluation and the Dask runner say while they work.

Asserted on log records and on the `key=value` lines of a non-terminal stderr, never on rich's rendering:
training logs one line per epoch (loss, validation NME, img/s, ETA) and a summary, also when its output is
not a terminal; evaluation logs a line per 10 % of the images (shown by `r3fa eval` off a terminal); a Dask
build logs nothing below WARNING.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.runner import run_tasks
from r3fa.benchmarks import load_benchmark
from r3fa.crop import CropConvention
from r3fa.evaluation import MeanParamsPredictor, predict_landmarks
from r3fa.params import load_whitening
from r3fa.paths import PROJECT_ROOT, data_root

NUMBER = r"-?\d+(\.\d+)?(e-?\d+)?"
EPOCH_LINE = re.compile(
    rf"^train epoch=(?P<epoch>\d+)/2 step=\d+ lr={NUMBER} train_loss=(?P<loss>{NUMBER}) val_loss={NUMBER} "
    rf"val_nme=(?P<nme>{NUMBER}) img_per_s=(?P<ips>{NUMBER}) epoch_s={NUMBER} eta_s=(?P<eta>\d+)$"
)
SUMMARY_LINE = re.compile(rf"^train done epochs=2 val_nme={NUMBER} train_loss={NUMBER} seconds={NUMBER} model=\S+$")


def test_training_logs_a_line_per_epoch_and_a_summary_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    from pipelines.build import build_shards

    shards = tmp_path / "shards"
    build_shards(PROJECT_ROOT / "configs/mix/test.yaml", shards, workers=0)
    command = [sys.executable, "-m", "r3fa.training", "--config", str(PROJECT_ROOT / "configs/train/test.yaml")]
    command += ["--shards", str(shards), "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("train ")]
    epochs = [EPOCH_LINE.match(line) for line in lines[:-1]]
    assert all(epochs) and [int(m["epoch"]) for m in epochs] == [1, 2], lines
    assert all(np.isfinite(float(m["loss"])) and float(m["nme"]) > 0 and float(m["ips"]) > 0 for m in epochs)
    assert int(epochs[-1]["eta"]) == 0
    assert SUMMARY_LINE.match(lines[-1]), lines[-1]


def test_evaluation_logs_a_line_per_tenth_of_the_images(caplog: pytest.LogCaptureFixture) -> None:
    bench = load_benchmark("aflw2000-3d", np.arange(0, 2000, 50))  # 40 images, batches of 3: 14 batches
    predictor = MeanParamsPredictor.from_whitening(load_whitening("v1"), CropConvention.V1)
    calls: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, logger="r3fa.evaluation"):
        predict_landmarks(predictor, bench, batch_size=3, progress=lambda done, total: calls.append((done, total)))
    percents = [int(r.getMessage().rsplit("percent=", 1)[1]) for r in caplog.records if r.name == "r3fa.evaluation"]
    assert [p // 10 for p in percents] == list(range(1, 11)) and percents[-1] == 100
    assert len(calls) == 14 and calls[-1] == (40, 40)


def test_a_dask_run_logs_nothing_below_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert sorted(run_tasks(abs, [-1, -2, 3], workers=1)) == [1, 2, 3]
    chatter = [r for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING]
    assert chatter == []
    assert logging.getLogger("distributed").level != logging.WARNING  # the level is given back after the run


def test_r3fa_eval_off_a_terminal_logs_a_line_per_tenth(tmp_path: Path) -> None:
    weights = data_root() / "3ddfa_v2/weights/mb05_120x120.pth"
    command = [sys.executable, "-m", "cli.main", "eval", "--checkpoint", str(weights)]
    command += ["--model", "mobilenet_v1", "--benchmark", "aflw2000-3d", "--n-folds", "20", "--fold", "0"]
    command += ["--batch-size", "10", "--out", str(tmp_path / "eval"), "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr
    lines = re.findall(r"^evaluate benchmark=aflw2000-3d done=(\d+)/100 percent=(\d+)$", done.stderr, re.MULTILINE)
    assert [int(percent) for _, percent in lines] == list(range(10, 101, 10)), done.stderr


BUILD_LINE = re.compile(rf"^build done=(?P<done>\d+)/(?P<total>\d+) percent=(?P<percent>\d+) samples_per_s={NUMBER}( eta_s=\d+)?$")


def test_a_shard_build_off_a_terminal_reports_plain_lines_up_to_100_percent(tmp_path: Path) -> None:
    """Rich shows nothing live when stderr is not a terminal (CI, cron, a log file): the build says how far it
    is in plain lines instead, rising to done == total."""
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "shards", "build",
         str(PROJECT_ROOT / "configs/mix/test.yaml"), "--out", str(tmp_path / "shards"), "--workers", "0"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = [BUILD_LINE.match(line) for line in run.stderr.splitlines() if line.startswith("build ")]
    assert lines and all(lines), run.stderr
    done = [int(m["done"]) for m in lines]
    assert done == sorted(done) and len(lines) >= 3
    assert int(lines[-1]["done"]) == int(lines[-1]["total"]) and lines[-1]["percent"] == "100"
