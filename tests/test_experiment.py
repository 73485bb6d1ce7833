"""Experiments (`r3fa.experiments`, `flows/experiment.py`, `r3fa.sampling`): the grid config and its overrides,
the interval estimators, pose-balanced sampling, and one real 2-variant x 2-seed experiment through Prefect on
the tests' tiny configs, with a spy that proves the checkpoint is chosen before the evaluation fold is read."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from r3fa.errors import UserError
from r3fa.experiments import runs as runs_module
from r3fa.experiments.config import apply_overrides, load_experiment, resolve_train, variant_train
from r3fa.experiments.stats import paired_bootstrap, t_interval, welch_interval
from r3fa.metrics import BIN_NAMES
from r3fa.paths import PROJECT_ROOT
from r3fa.sampling import balanced_weights, pose_balanced_order, split_yaw_bins

TEST_GRID = PROJECT_ROOT / "configs/experiments/test.yaml"


def test_dotted_overrides_set_nested_fields_and_leave_the_input_alone() -> None:
    raw = {"optim": {"lr": 0.01, "gamma": 0.2}, "synthesis": {"count": 5}}
    out = apply_overrides(raw, {"optim.lr": 0.5, "augmentation.copies_per_image": 1, "synthesis": None})
    assert out == {"optim": {"lr": 0.5, "gamma": 0.2}, "synthesis": None, "augmentation": {"copies_per_image": 1}}
    assert raw["optim"]["lr"] == 0.01
    with pytest.raises(UserError, match="'lr' is not a section"):
        apply_overrides(raw, {"optim.lr.x": 1})


def test_both_shipped_grids_validate_and_a_bad_override_fails_before_any_run(tmp_path: Path) -> None:
    for name in ("test", "ablation"):
        cfg = load_experiment(PROJECT_ROOT / f"configs/experiments/{name}.yaml")
        assert len(cfg.seeds) >= 2 and cfg.reference_name == cfg.variants[0].name
    raw = yaml.safe_load(TEST_GRID.read_text())
    raw["variants"][1]["train_overrides"] = {"optim.lr": -1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"variant real-aug-profiling\): optim.lr"):
        load_experiment(bad)


def test_the_step_budget_sets_the_epochs_and_scales_the_milestones(tmp_path: Path, monkeypatch) -> None:
    cfg = load_experiment(PROJECT_ROOT / "configs/experiments/ablation.yaml")
    base = variant_train(cfg, cfg.variants[0])  # configs/train/demo.yaml: 15 epochs, milestones [10, 13]
    monkeypatch.setattr("r3fa.experiments.config.train_steps_per_epoch", lambda shard_dir, batch: 14)
    run = resolve_train(cfg, cfg.variants[0], seed=2, shard_dir=tmp_path)
    epochs = round(cfg.steps / 14)
    assert (run.epochs, run.seed, run.keep_epoch_checkpoints) == (epochs, 2, True)
    assert run.optim.milestones == [round(m * epochs / base.epochs) for m in base.optim.milestones]


def test_t_interval_is_students_and_needs_two_values() -> None:
    x = np.array([8.1, 8.6, 8.3])
    i = t_interval(x)
    half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert i.mean == pytest.approx(x.mean()) and (i.low, i.high) == pytest.approx((x.mean() - half, x.mean() + half))
    one = t_interval(np.array([5.0]))
    assert (one.low, one.high, one.n) == (None, None, 1)


def test_welch_interval_matches_scipy() -> None:
    a, b = np.array([8.1, 8.6, 8.3]), np.array([7.2, 7.9, 7.4, 7.5])
    expected = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    i = welch_interval(a, b)
    assert i.mean == pytest.approx(b.mean() - a.mean()) and (i.low, i.high) == pytest.approx(tuple(expected))


def test_paired_bootstrap_is_exact_for_a_constant_shift_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    bins = np.repeat([0, 1, 2], [50, 30, 20])
    ref = rng.uniform(0.02, 0.1, bins.size)
    shifted = paired_bootstrap(ref, ref - 0.01, bins, samples=300, seed=1)
    for name in (*BIN_NAMES, "mean"):
        assert shifted[name].mean == pytest.approx(-1.0) and shifted[name].low == pytest.approx(-1.0)
        assert shifted[name].excludes_zero()
    noisy = ref + rng.normal(0, 0.01, ref.size)
    first, again = (paired_bootstrap(ref, noisy, bins, samples=300, seed=1) for _ in range(2))
    assert first == again and first["mean"].low < first["mean"].mean < first["mean"].high


def test_pose_balanced_order_is_deterministic_balanced_and_per_epoch() -> None:
    bins = np.repeat([0, 1, 2], [700, 250, 50])
    order = pose_balanced_order(bins, seed=3, epoch=4)
    assert order.shape == (1000,) and order.dtype == np.int64
    assert np.array_equal(order, pose_balanced_order(bins, seed=3, epoch=4))  # a resumed run sees the same order
    assert not np.array_equal(order, pose_balanced_order(bins, seed=3, epoch=5))
    shares = np.bincount(bins[order], minlength=3) / order.size
    assert np.all(np.abs(shares - 1 / 3) < 0.05), shares  # uniform sampling would give 0.70 / 0.25 / 0.05
    assert balanced_weights(np.array([0, 0, 2])).tolist() == [0.25, 0.25, 0.5]  # an empty bin takes no share


def _spy(monkeypatch) -> list[tuple]:
    """Record, in order, every checkpoint selection, benchmark load and evaluation of `run_one`."""
    events: list[tuple] = []
    select, load, evaluate = runs_module.select_epoch, runs_module.load_benchmark, runs_module.evaluate

    def spy_select(metrics_csv):
        chosen = select(metrics_csv)
        events.append(("select", Path(metrics_csv).parents[1], chosen[0]))
        return chosen

    def spy_load(*args, **kwargs):
        events.append(("benchmark", kwargs.get("fold"), kwargs.get("n_folds")))
        return load(*args, **kwargs)

    def spy_evaluate(predictor, bench, out_dir, *args, **kwargs):
        events.append(("evaluate", Path(out_dir).parent, Path(kwargs["checkpoint"]).name))
        return evaluate(predictor, bench, out_dir, *args, **kwargs)

    monkeypatch.setattr(runs_module, "select_epoch", spy_select)
    monkeypatch.setattr(runs_module, "load_benchmark", spy_load)
    monkeypatch.setattr(runs_module, "evaluate", spy_evaluate)
    return events


@pytest.mark.slow
def test_a_two_by_two_experiment_chooses_on_val_evaluates_once_reports_intervals_and_resumes(
    tmp_path: Path, monkeypatch
) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.experiment import experiment_flow

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared with other work: one thread is faster and the numbers do not care
    events = _spy(monkeypatch)
    try:
        with prefect_test_harness(server_startup_timeout=120):
            result = experiment_flow(str(TEST_GRID), str(tmp_path / "exp"))
            n_events = len(events)
            again = experiment_flow(str(TEST_GRID), str(tmp_path / "exp"))
    finally:
        torch.set_num_threads(threads)

    # every run: chosen on its own metrics.csv val column, then one benchmark load and one evaluation of that epoch
    assert len(events) == n_events == 4 * 3, events
    for select, bench, evaluate in zip(events[0::3], events[1::3], events[2::3]):
        assert select[0] == "select" and bench == ("benchmark", 1, 20) and evaluate[0] == "evaluate"
        run_dir = select[1]
        with (run_dir / "train" / "metrics.csv").open() as fh:
            val = [float(row["val_nme"]) for row in csv.DictReader(fh)]
        assert len(val) == 2 and select[2] == int(np.argmin(val))
        assert evaluate[1:] == (run_dir, f"epoch_{select[2]:03d}.pth")
        assert json.loads((run_dir / "done.json").read_text())["selected_epoch"] == select[2]

    report = result["report"]
    assert again["report"] == report  # the second call reused every finished run: nothing trained or evaluated
    assert json.loads(Path(result["paths"]["json"]).read_text()) == report
    assert "paired bootstrap" in Path(result["paths"]["markdown"]).read_text()
    assert report["reference"] == "real-aug" and list(report["variants"]) == ["real-aug", "real-aug-profiling"]
    assert report["images"]["total"] == 100 and sum(report["images"][b] for b in BIN_NAMES) == 100
    for name, entry in report["variants"].items():
        assert entry["seeds"] == [0, 1]
        assert all(abs(s - 40) <= 10 for s in entry["steps"])  # the same budget, to half an epoch
        for column in (*BIN_NAMES, "mean"):
            nme = entry["nme"][column]
            assert nme["n"] == 2 and nme["low"] <= nme["mean"] <= nme["high"]
            assert nme["mean"] == pytest.approx(np.mean(entry["per_seed"][column]))
        assert ("vs_reference" in entry) == (name != "real-aug")
    diff = report["variants"]["real-aug-profiling"]["vs_reference"]["mean"]
    assert diff["low"] <= diff["mean"] <= diff["high"] and diff["verdict"] in ("lower NME", "higher NME", "no clear difference")
    seeds = diff["over_seeds"]
    assert seeds["mean"] == pytest.approx(report["variants"]["real-aug-profiling"]["nme"]["mean"]["mean"] - report["variants"]["real-aug"]["nme"]["mean"]["mean"])
    for kind in ("ced", "ced_bins"):
        assert Path(result["paths"][kind]).read_bytes().startswith(b"\x89PNG")


def test_the_training_loader_serves_the_pose_balanced_order_of_a_real_shard_set(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from pipelines.build import build_shards
    from r3fa.loaders import create_loader

    summary = build_shards(PROJECT_ROOT / "configs/mix/test.yaml", tmp_path / "shards", workers=0)
    bins = split_yaw_bins(tmp_path / "shards", "train")
    per_bin = summary.counts["by_split_yaw_bin"]
    assert np.bincount(bins, minlength=3).tolist() == [per_bin.get(f"train/{b}", 0) for b in BIN_NAMES]

    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    keys = [  # global index order: shards in manifest order, rows in tar order
        key for entry in manifest["shards"] if entry["split"] == "train" and entry["count"]
        for key in pq.read_table(tmp_path / "shards" / entry["file"].replace(".tar", ".parquet")).column("key").to_pylist()
    ]  # fmt: skip
    loader = create_loader(tmp_path / "shards", "train", 4, kind="torch", num_threads=0, seed=5, epoch=2,
                           sampling="pose_balanced")  # fmt: skip
    served = [key for batch in loader for key in batch["keys"]]
    order = pose_balanced_order(bins, seed=5, epoch=2)
    assert served == [keys[i] for i in order[: len(served)]] and len(served) == len(loader) * 4
    uniform = create_loader(tmp_path / "shards", "train", 4, kind="torch", num_threads=0, seed=5, epoch=2)
    assert sorted(key for batch in uniform for key in batch["keys"]) != sorted(served)  # with replacement, reweighted


def test_the_command_refuses_a_missing_grid_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "experiment", str(tmp_path / "missing.yaml"), "--format", "json"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "config not found" in lines[0], run.stderr
