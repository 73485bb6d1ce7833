"""Training on real shards (`configs/mix/test.yaml`, `configs/train/test.yaml`), each run a real process:

- a run killed with SIGKILL in the middle of an epoch and started again ends with the weights, and the metrics,
  of a run never stopped;
- a two-process DDP run (torchrun, gloo on CPU) splits every epoch between its ranks, validates on all of
  the held-out split, and normalises every BatchNorm layer over the global batch (its checkpoint records the
  synchronised layers; a one-process run records none);
- the final checkpoint is a model payload that `load_predictor` reads and that carries the dataset's whitening.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from r3fa import models
from r3fa.checkpoint import load_checkpoint
from r3fa.config import load_config
from r3fa.paths import PROJECT_ROOT
from r3fa.train_config import TrainConfig

pytestmark = pytest.mark.slow

TRAIN_CONFIG = PROJECT_ROOT / "configs/train/test.yaml"
ENV = {
    **os.environ,
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296",
    "OMP_NUM_THREADS": "1",  # the same kernels, hence the same float sums, in every process
}
TIMING = ("images_per_s", "epoch_seconds")
TORCHRUN_2 = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.build import build_shards

    out = tmp_path_factory.mktemp("shards")
    build_shards(PROJECT_ROOT / "configs/mix/test.yaml", out, workers=0)
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` and every process below it (torchrun starts its workers in sessions of their own, so
    killing its process group would leave them running), then reap `proc`."""
    with contextlib.suppress(psutil.NoSuchProcess):  # it ended meanwhile
        tree = psutil.Process(proc.pid)
        for process in [*tree.children(recursive=True), tree] if proc.poll() is None else []:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
    proc.wait()


def _run(command: list[str], timeout: float = 180, env: dict[str, str] | None = None) -> None:
    """Run to completion, killed whole (torchrun's workers too) on a timeout."""
    proc = subprocess.Popen(command, env=env or ENV, cwd=PROJECT_ROOT)
    try:
        assert proc.wait(timeout) == 0, f"exit status {proc.returncode}: {' '.join(command)}"
    finally:
        _kill_tree(proc)


def _kill_at_first_checkpoint(command: list[str], run: Path, env: dict[str, str] | None = None) -> dict:
    """Start a training run and SIGKILL it (torchrun's workers too) once it has written a step checkpoint;
    returns that checkpoint's `train_state` (checked to be mid-epoch). Nothing of the run outlives the call."""
    last = run / "checkpoints" / "last.pth"
    proc = subprocess.Popen(command, env=env or ENV, cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 180
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        _kill_tree(proc)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the first step checkpoint"
    position = load_checkpoint(last)["train_state"]
    assert position["step"] > 0, "killed at an epoch boundary, not mid-epoch"
    assert not (run / "model.pth").exists()
    return position


def _train(shard_dir: Path, out: Path, *launcher: str, config: Path = TRAIN_CONFIG) -> list[str]:
    return [*(launcher or (sys.executable,)), "-m", "r3fa.training", "--config", str(config),
            "--shards", str(shard_dir), "--out", str(out), "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run never stopped."""
    out = tmp_path_factory.mktemp("reference")
    _run(_train(shard_dir, out))
    return out


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(shard_dir: Path, reference: Path, tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    _kill_at_first_checkpoint(_train(shard_dir, killed), killed)
    _run(_train(shard_dir, killed))
    expected, resumed = load_checkpoint(reference / "model.pth"), load_checkpoint(killed / "model.pth")
    assert expected["state_dict"].keys() == resumed["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert _metrics(killed) == _metrics(reference)


def test_two_process_ddp_splits_each_epoch_and_validates_on_everything(shard_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(TRAIN_CONFIG, TrainConfig)
    counts = json.loads((shard_dir / "manifest.json").read_text())["counts"]["by_split"]
    out = tmp_path / "ddp"
    _run(_train(shard_dir, out, *TORCHRUN_2))

    steps = counts["train"] // 2 // (cfg.batch_size // 2)  # each rank: floor(N / W) samples, B / W per step
    rows = _metrics(out)
    assert [int(r["global_step"]) for r in rows] == [steps * (e + 1) for e in range(cfg.epochs)]
    assert all(int(r["val_samples"]) == counts["val"] for r in rows)
    assert all(np.isfinite(float(r["val_nme"])) for r in rows)
    model = models.create(cfg.model.name, **cfg.model.kwargs)
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert batchnorms > 0
    assert load_checkpoint(out / "model.pth")["meta"]["ddp"] == {
        "world_size": 2, "loader_kind": "torch", "sync_batchnorm_layers": batchnorms,
    }  # fmt: skip


def test_the_final_checkpoint_is_a_predictor_with_the_datasets_whitening(shard_dir: Path, reference: Path) -> None:
    from r3fa.predictor import load_predictor

    payload = load_checkpoint(reference / "model.pth")
    whitening = json.loads((shard_dir / "manifest.json").read_text())["whitening"]
    assert payload["whitening"] == whitening
    assert payload["crop_convention"] == "3ddfa_v1" and "train_state" not in payload
    assert payload["meta"]["ddp"]["world_size"] == 1 and payload["meta"]["ddp"]["sync_batchnorm_layers"] == 0
    predictor = load_predictor(reference / "model.pth")
    crops = np.zeros((2, 120, 120, 3), np.uint8)
    assert predictor.landmarks_in_image(crops, np.array([[0, 0, 120, 120]] * 2, float)).shape == (2, 3, 68)
