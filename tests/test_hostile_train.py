"""Training under hostile or careless use: divergence stops the run and leaves no broken model, a checkpoint
is never written with non-finite weights, resume is exact or refused with a way out, `resume=False` never
continues another run, a run folder is written by one run at a time, and BatchNorm under DDP sees the global
batch.

Real shards (`configs/mix/test.yaml`) and one-epoch runs of `configs/train/test.yaml`; the step-level cases
use a two-layer model and a list of batches, so they take milliseconds.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from r3fa.checkpoint import NonFiniteCheckpointError, load_checkpoint, save_checkpoint
from r3fa.config import load_config
from r3fa.errors import UserError
from r3fa.paths import PROJECT_ROOT
from r3fa.sync_batchnorm import GlobalBatchNorm2d, convert_sync_batchnorm
from r3fa.train_config import TrainConfig
from r3fa.train_resume import TrainLock, TrainState, sample_order_mismatch
from r3fa.training import DivergenceError, fit, train_one_epoch

TRAIN_CONFIG = PROJECT_ROOT / "configs/train/test.yaml"
ENV = {
    **os.environ,
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296",
    "OMP_NUM_THREADS": "1",
}


# ----------------------------------------------------------------------------- one step at a time
class _NanOn:
    """A loss that is NaN for the batches whose index is in `bad` (counted across calls), MSE otherwise."""

    def __init__(self, bad: set[int]) -> None:
        self.bad, self.calls = bad, 0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = ((pred - target) ** 2).mean()
        self.calls += 1
        return loss * math.nan if self.calls - 1 in self.bad else loss


def _tiny() -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 62))
    batches = [{"image": torch.randn(2, 3, 2, 2), "params": torch.randn(2, 62)} for _ in range(4)]
    return model, batches


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_a_non_finite_batch_does_not_step_and_the_allowance_is_counted() -> None:
    model, batches = _tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    state, seen = TrainState(), []
    train_one_epoch(
        model, batches, _NanOn({1}), optimizer, state, device=torch.device("cpu"), amp=False, channels_last=False,
        after_step=lambda s, n: seen.append(_weights(model)), max_nonfinite_steps=1,
    )  # fmt: skip
    assert (state.step, state.nonfinite_steps, state.samples) == (4, 1, 6)  # the NaN batch is not summed
    assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[1]))  # batch 1 did not move the weights
    assert not all(torch.equal(a, b) for a, b in zip(seen[1], seen[2]))
    assert math.isfinite(state.loss_sum)


def test_the_first_non_finite_batch_stops_the_run_by_default() -> None:
    model, batches = _tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    before, state = _weights(model), TrainState()
    with pytest.raises(DivergenceError, match="diverged at epoch 0 step 0"):
        train_one_epoch(
            model, batches, _NanOn({0}), optimizer, state, device=torch.device("cpu"), amp=False, channels_last=False
        )
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model)))


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    state = {"w": torch.ones(3), "b": torch.tensor([0.0, math.inf]), "steps": torch.tensor(3)}
    with pytest.raises(NonFiniteCheckpointError, match="tensor b holds non-finite"):
        save_checkpoint({"state_dict": state}, path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"", b"PK\x03\x04truncated zip"])
def test_a_file_that_is_not_a_checkpoint_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "last.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_the_sample_order_check_names_what_changed() -> None:
    recorded = {"seed": 0, "global_batch_size": 4, "shuffle": "global"}
    assert sample_order_mismatch(recorded, dict(recorded)) is None
    assert sample_order_mismatch(recorded, {**recorded, "seed": 1, "shuffle": "py1br"}) == (
        "seed 0 -> 1; shuffle 'global' -> 'py1br'"
    )
    assert "no sample order" in sample_order_mismatch(None, recorded)


# ----------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.build import build_shards

    out = tmp_path_factory.mktemp("shards")
    build_shards(PROJECT_ROOT / "configs/mix/test.yaml", out, workers=0)
    return out


def _config(**overrides: object) -> TrainConfig:
    return load_config(TRAIN_CONFIG, TrainConfig, epochs=1, keep_epoch_checkpoints=False, **overrides)


def _every_checkpoint_is_finite(run: Path) -> None:
    for path in run.rglob("*.pth"):
        state = load_checkpoint(path)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), path


@pytest.mark.slow
def test_a_diverging_learning_rate_stops_with_one_line_and_leaves_no_model(shard_dir: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(TRAIN_CONFIG.read_text())
    raw["optim"]["lr"] = 1e30  # finite, so it validates: the divergence guard must catch it
    config = tmp_path / "diverging.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "r3fa.training", "--config", str(config), "--shards", str(shard_dir), "--out", str(out),
         "--no-progress"],
        env=ENV, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr and "training diverged" in lines[0]
    assert not (out / "model.pth").exists()
    _every_checkpoint_is_finite(out)


@pytest.mark.slow
def test_resume_refuses_another_sample_order_and_fresh_sets_the_old_run_aside(shard_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = fit(_config(), shard_dir, run, progress=False, run_id="attempt-A")
    last = run / "checkpoints" / "last.pth"
    recorded = load_checkpoint(last)["train_state"]
    assert (recorded["loader_kind"], recorded["world_size"], recorded["run_id"]) == ("torch", 1, "attempt-A")
    assert load_checkpoint(first.model_path)["meta"]["ddp"] == {
        "world_size": 1, "loader_kind": "torch", "sync_batchnorm_layers": 0,
    }  # fmt: skip

    payload = load_checkpoint(last)
    payload["train_state"]["sample_order"]["shuffle"] = "py1br"
    save_checkpoint(payload, last)
    with pytest.raises(UserError, match=r"shuffle 'py1br' -> 'global'.*--fresh"):
        fit(_config(), shard_dir, run, progress=False)
    payload["train_state"]["sample_order"]["shuffle"] = "global"
    save_checkpoint(payload, last)
    with pytest.raises(UserError, match=r"seed 0 -> 1.*--fresh"):
        fit(_config(seed=1), shard_dir, run, progress=False)
    with pytest.raises(UserError, match="another config"):
        fit(_config(optim={"lr": 0.5}), shard_dir, run, progress=False)

    # A retry of the same run (same run_id) continues its own attempt even when asked to start afresh ...
    again = fit(_config(), shard_dir, run, resume=False, progress=False, run_id="attempt-A")
    assert again.resumed_from == {"epoch": 1, "step": 0}
    # ... and another run never does: the old files are set aside, whole, and the run starts from scratch.
    old_model = first.model_path.read_bytes()
    fresh = fit(_config(), shard_dir, run, resume=False, progress=False, run_id="attempt-B")
    assert fresh.resumed_from is None
    (aside,) = run.glob("replaced-*")
    assert (aside / "model.pth").read_bytes() == old_model and (aside / "checkpoints" / "last.pth").exists()
    assert load_checkpoint(run / "checkpoints" / "last.pth")["train_state"]["run_id"] == "attempt-B"


@pytest.mark.slow
def test_a_broken_last_checkpoint_refuses_resume_but_not_a_fresh_run(shard_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pth").write_text("garbage")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        fit(_config(), shard_dir, run, progress=False)
    assert fit(_config(), shard_dir, run, resume=False, progress=False, run_id="x").resumed_from is None


def test_a_second_run_on_a_held_folder_stops_with_one_line_naming_the_holder(shard_dir: Path, tmp_path: Path) -> None:
    # A killed torchrun can leave its worker training on (it runs in a session of its own): a retry on the same
    # folder must not interleave its checkpoints with that worker's.
    run = tmp_path / "run"
    command = [sys.executable, "-m", "r3fa.training", "--config", str(TRAIN_CONFIG), "--shards", str(shard_dir),
               "--out", str(run), "--no-progress"]  # fmt: skip
    run.mkdir()
    with TrainLock(run):  # this process holds the folder, as the orphaned worker would
        done = subprocess.run(command, env=ENV, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"is being trained by pid {os.getpid()} on " in lines[0] and "--out" in lines[0]
    assert list(run.iterdir()) == []  # nothing written, and the holder's lock file removed on release
    # the folder is free again: a run takes it, and leaves no lock file behind
    fit(_config(), shard_dir, run, progress=False)
    assert (run / "model.pth").exists() and not (run / TrainLock.lock_name).exists()


# ----------------------------------------------------------------------------- BatchNorm over the global batch
def _loss_weights(shape: torch.Size) -> torch.Tensor:
    """Fixed weights for a loss that depends on the normalised values (a sum of squares would not: ~constant)."""
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(2))


def _sync_bn_worker(rank: int, world_size: int, port: int, batch: torch.Tensor, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert convert_sync_batchnorm(model) == 1 and isinstance(model[1], GlobalBatchNorm2d)
    y = model(batch.chunk(world_size)[rank])
    (y * _loss_weights(y.shape[1:]).expand_as(y)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for g in grads:  # the gradient of the whole batch's loss is the sum of the ranks' (DDP then averages)
        torch.distributed.all_reduce(g)
    if rank == 0:
        torch.save({"grads": grads, "running_var": model[1].running_var.clone(), "out": y.detach()}, out)
    torch.distributed.destroy_process_group()


def test_global_batchnorm_on_two_cpu_processes_equals_batchnorm_on_the_whole_batch(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    batch = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    out = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(_sync_bn_worker, args=(2, port, batch, str(out)), nprocs=2, join=True)
    synced = torch.load(out)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    y = model(batch)
    (y * _loss_weights(y.shape[1:]).expand_as(y)).sum().backward()
    for got, want in zip(synced["grads"], (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(synced["running_var"], model[1].running_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(synced["out"], y[:4].detach(), rtol=1e-4, atol=1e-5)
