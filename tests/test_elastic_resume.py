"""Elastic, exact resume (issue 12): a training run stopped mid-epoch continues on another number of processes
or with the other loader kind, and sees exactly the samples of the epoch it had not yet seen, each once.

Each case kills a real run (SIGKILL once it has written a step checkpoint, `configs/train/test.yaml`, gloo on
CPU under torchrun for two processes) and resumes it with the other launcher or loader. Both runs record the
keys every rank consumed (`R3FA_TRAIN_BATCH_LOG`); the steps the checkpoint counts, followed by the resumed
run's, must be every epoch's canonical order (`r3fa.loaders.order`, or `r3fa.sampling` for pose-balanced epochs)
cut into global batches, ranks in order, each step once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from r3fa.config import load_config
from r3fa.loaders import dali_available
from r3fa.loaders.order import epoch_order
from r3fa.loaders.shardset import SampleReader, read_shards
from r3fa.sampling import pose_balanced_order, split_yaw_bins
from r3fa.train_config import TrainConfig
from r3fa.train_report import BATCH_LOG_ENV
from tests.test_train_resume import ENV, TORCHRUN_2, TRAIN_CONFIG, _kill_at_first_checkpoint, _run, _train
from tests.test_train_resume import shard_dir  # noqa: F401 (the module's shard set, built once)

pytestmark = pytest.mark.slow

ONE: tuple[str, ...] = ()  # `python -m r3fa.training`, one process
TORCH = {"kind": "torch", "num_threads": 0}
DALI = {"kind": "dali", "num_threads": 1}
needs_dali = pytest.mark.skipif(not dali_available(), reason="nvidia.dali does not import here")

# (launcher, loader) of the stopped run, (launcher, loader) of the resumed run, the order's sampling
CASES = [
    pytest.param(ONE, TORCH, TORCHRUN_2, TORCH, "uniform", id="1-to-2-processes"),
    pytest.param(TORCHRUN_2, TORCH, ONE, TORCH, "pose_balanced", id="2-to-1-processes-pose-balanced"),
    pytest.param(ONE, TORCH, ONE, DALI, "uniform", id="torch-to-dali", marks=needs_dali),
    pytest.param(TORCHRUN_2, DALI, ONE, TORCH, "uniform", id="dali-on-2-to-torch-on-1", marks=needs_dali),
]


def _config(path: Path, loader: dict, sampling: str) -> Path:
    raw = yaml.safe_load(TRAIN_CONFIG.read_text())
    raw["loader"].update(loader, sampling=sampling)
    raw["epochs"] = 1  # the resumed epoch is what matters; a second one would only double the time
    path.write_text(yaml.safe_dump(raw))
    return path


def _canonical_keys(shard_dir: Path, cfg: TrainConfig, epoch: int) -> list[str]:
    """The keys of epoch `epoch` in its canonical order, computed without any loader."""
    shards = read_shards(shard_dir, "train")
    if cfg.loader.sampling == "pose_balanced":
        order = pose_balanced_order(split_yaw_bins(shard_dir, "train"), cfg.seed, epoch)
    else:
        order = epoch_order([s.count for s in shards], cfg.seed, epoch, cfg.loader.shuffle)
    with SampleReader(tuple(shards)) as reader:
        return [reader.key(int(i)) for i in order]


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(log.glob("rank*.jsonl")) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("first_launcher", "first_loader", "then_launcher", "then_loader", "sampling"), CASES)
def test_a_stopped_run_resumes_on_another_world_size_or_loader_in_the_canonical_order(
    shard_dir: Path,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
    first_launcher: tuple[str, ...],
    first_loader: dict,
    then_launcher: tuple[str, ...],
    then_loader: dict,
    sampling: str,
) -> None:
    run = tmp_path / "run"
    first = _config(tmp_path / "first.yaml", first_loader, sampling)
    then = _config(tmp_path / "then.yaml", then_loader, sampling)
    cfg = load_config(first, TrainConfig)
    stopped_log, resumed_log = tmp_path / "log-stopped", tmp_path / "log-resumed"

    at = _kill_at_first_checkpoint(
        _train(shard_dir, run, *first_launcher, config=first), run, {**ENV, BATCH_LOG_ENV: str(stopped_log)}
    )
    assert at["samples_consumed"] == at["step"] * cfg.batch_size
    assert at["sample_order"]["sampling"] == sampling and at["sample_order"]["global_batch_size"] == cfg.batch_size
    _run(_train(shard_dir, run, *then_launcher, config=then), env={**ENV, BATCH_LOG_ENV: str(resumed_log)})
    assert (run / "model.pth").exists()

    counted = [r for r in _records(stopped_log) if (r["epoch"], r["step"]) < (at["epoch"], at["step"])]
    resumed = _records(resumed_log)
    assert counted and resumed and min((r["epoch"], r["step"]) for r in resumed) == (at["epoch"], at["step"])
    assert {r["world_size"] for r in counted} == {2 if first_launcher else 1}
    assert {r["world_size"] for r in resumed} == {2 if then_launcher else 1}

    steps: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for record in counted + resumed:
        steps[record["epoch"], record["step"]].append(record)
    total = sum(s.count for s in read_shards(shard_dir, "train"))
    per_epoch, batch = total // cfg.batch_size, cfg.batch_size
    assert sorted(steps) == [(e, s) for e in range(cfg.epochs) for s in range(per_epoch)]
    for epoch in range(cfg.epochs):
        canonical = _canonical_keys(shard_dir, cfg, epoch)
        seen = []
        for step in range(per_epoch):
            ranks = sorted(steps[epoch, step], key=lambda r: r["rank"])
            assert [r["rank"] for r in ranks] == list(range(ranks[0]["world_size"])), (epoch, step)
            positions = [p for r in ranks for p in r["positions"]]
            assert positions == list(range(step * batch, (step + 1) * batch)), (epoch, step)
            seen += [k for r in ranks for k in r["keys"]]
        assert seen == canonical[: per_epoch * batch], epoch
        if sampling == "uniform":
            assert len(set(seen)) == len(seen)  # every sample of the epoch at most once (the tail is dropped)
