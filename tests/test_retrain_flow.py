"""The retrain-and-eval flow's logic with fast stand-in stages: promotion, rejection (worse than the promoted
model, than the mean-parameter baseline, or with a NaN metric), a registry with a bad entry, rebuilds on input
changes, and the run's final state (`Promoted` / `Rejected`).

The stages (shard build, training, evaluation) are replaced by functions that write the files the flow
reads and return chosen NMEs, so these tests check the wiring in seconds; tests/test_deploy_integration.py
runs the real stages through a deployment.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.testing.utilities import prefect_test_harness

import flows.retrain_and_eval as retrain
from flows.retry import is_transient
from pipelines.mix import load_mix
from r3fa.errors import UserError
from r3fa.metrics import BIN_NAMES
from r3fa.promotion import read_registry
from r3fa.shard_contract import MANIFEST_VERSION, REJECTED_FILE, ShardSetManifest, manifest_json


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def source(tmp_path: Path, aflw2000_dir: Path) -> Path:
    """Six AFLW2000-3D images with their annotations, copied so that a test may touch them."""
    root = tmp_path / "aflw"
    root.mkdir()
    for image in sorted(aflw2000_dir.glob("image*.jpg"))[:6]:
        shutil.copy2(image, root)
        shutil.copy2(image.with_suffix(".mat"), root)
    return root


def write_mix(path: Path, root: Path, seed: int = 0) -> Path:
    source = {"kind": "aflw2000_3d", "root": str(root), "fold": 0, "n_folds": 2}
    path.write_text(yaml.safe_dump({"name": "t", "sources": [source], "seed": seed}))
    return path


BASELINE_MEAN = 23.0  # the stand-in mean-parameter baseline


def bins(mean: float | None) -> dict:
    low = None if mean is None else mean - 1
    return {"0-30": low, "30-60": mean, "60-90": None if mean is None else mean + 1, "mean": mean, "std": 1.0}


def empty_manifest(config: dict, inputs: str) -> ShardSetManifest:
    """A valid manifest of a set with no shards: what `is_current` reads of a build of `config` over `inputs`."""
    counts = {"samples": 0, "planned": 0, "rejected": 0, "surplus": 0, "synthetic": 0, "by_stage": {},
              "by_source_stage": {}, "by_split": {"train": 0, "val": 0}, "by_source": {},
              "by_yaw_bin": dict.fromkeys(BIN_NAMES, 0), "by_split_yaw_bin": {}}  # fmt: skip
    return ShardSetManifest(
        manifest_version=MANIFEST_VERSION, name=config["name"], code_version="test", crop_convention="3ddfa_v1",
        sample_schema_version=1, config=config, counts=counts, rejected_file=REJECTED_FILE, rejected_sha256="0" * 64,
        inputs={"method": "test", "sha256": inputs, "files": 0, "items": 0, "items_by_source": {}, "by_source": {}},
        whitening={"name": "test", "mean": [0.0] * 62, "std": [1.0] * 62}, shards=[],
    )  # fmt: skip


class Stages:
    """Stand-ins for the stages: record their calls and return the NMEs queued in `means`."""

    def __init__(self, means: list[float | None]) -> None:
        self.means, self.builds, self.trains = list(means), [], []

    def build_dataset_flow(self, mix_path: str, shard_dir: str, **kwargs) -> dict:
        mix = load_mix(mix_path)
        _, inputs = retrain.shard_set_key(mix)
        Path(shard_dir).mkdir(parents=True, exist_ok=True)
        (Path(shard_dir) / "manifest.json").write_bytes(manifest_json(empty_manifest(mix.model_dump(mode="json"), inputs)))
        self.builds.append(shard_dir)
        return {"out_dir": shard_dir}

    def train_flow(self, config: str, shard_dir: str, out_dir: str, **kwargs) -> dict:
        self.trains.append({"shard_dir": shard_dir, **kwargs})
        model = Path(out_dir) / "model.pth"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(b"weights")
        return {"model_path": str(model)}

    def evaluate_flow(self, checkpoint: str, benchmark: str, out_dir: str, **kwargs) -> dict:
        return {"report": {"bins": bins(self.means.pop(0))}}

    def mean_params_task(self, shard_dir: str, benchmark: str, fold: int, n_folds: int, out_dir: str, label: str):
        return {"bins": bins(BASELINE_MEAN)}


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch):
    def install(means: list[float]) -> Stages:
        fake = Stages(means)
        monkeypatch.setattr(retrain, "build_dataset_flow", fake.build_dataset_flow)
        monkeypatch.setattr(retrain, "train_flow", fake.train_flow)
        monkeypatch.setattr(retrain, "evaluate_flow", fake.evaluate_flow)
        monkeypatch.setattr(retrain, "mean_params_task", fake.mean_params_task)
        monkeypatch.setattr(retrain, "read_dataset_info", lambda shard_dir: type("Info", (), {"manifest_hash": "m"}))
        return fake

    return install


def run(mix: Path, out: Path, **kwargs) -> dict:
    return run_state(mix, out, **kwargs).result()


def run_state(mix: Path, out: Path, **kwargs):
    """The flow run's final state (its result is what calling the flow returns)."""
    return retrain.retrain_and_eval_flow(
        mix=str(mix), train="configs/train/paper.yaml", out_dir=str(out), registry=str(out / "registry.json"),
        return_state=True, **kwargs,
    )  # fmt: skip


def artifact(key: str, flow_run_id: str) -> str:
    """The data of the artifact `key` that the flow run `flow_run_id` created."""
    wanted = ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        (found,) = client.read_artifacts(artifact_filter=wanted)
    return found.data


def test_better_candidate_is_promoted_worse_is_rejected_and_unchanged_inputs_reuse_shards(
    tmp_path: Path, source: Path, stages
) -> None:
    fake = stages([5.0, 6.5])
    mix = write_mix(tmp_path / "mix.yaml", source)

    first = run(mix, tmp_path / "out")
    second = run(mix, tmp_path / "out")

    assert first["promoted"] and first["rebuilt"]
    assert not second["promoted"] and not second["rebuilt"]
    assert second["reason"] == "mean NME 6.500 % does not beat the promoted 5.000 %"
    assert len(fake.builds) == 1 and first["shard_dir"] == second["shard_dir"]
    registry = read_registry(tmp_path / "out" / "registry.json")
    assert registry["promoted"]["checkpoint"] == first["candidate"]["checkpoint"]
    assert [(h["decision"], h["benchmark"]) for h in registry["history"]] == [
        ("promoted", "aflw2000-3d-fold1of2"),
        ("rejected", "aflw2000-3d-fold1of2"),
    ]
    assert registry["history"][1]["reason"] == second["reason"]
    decision = artifact("retrain-decision", second["candidate"]["run_id"])
    assert "Candidate REJECTED" in decision and second["reason"] in decision
    table = artifact("retrain-nme", second["candidate"]["run_id"])
    assert [row["mean (%)"] for row in json.loads(table)] == [6.5, 5.0, BASELINE_MEAN]


@pytest.mark.parametrize(
    ("mean", "reason"),
    [(None, "candidate not judged: missing or non-finite metric(s)"),
     (float("nan"), "candidate not judged: missing or non-finite metric(s)"),
     (BASELINE_MEAN + 0.5, "does not beat the mean-parameter baseline")],
)  # fmt: skip
def test_a_broken_or_mean_face_candidate_is_rejected_and_the_run_says_so(
    tmp_path: Path, source: Path, stages, mean: float | None, reason: str
) -> None:
    stages([mean, mean, 5.0])
    mix = write_mix(tmp_path / "mix.yaml", source)
    first = run_state(mix, tmp_path / "out")  # nothing promoted yet
    assert first.is_completed() and first.name == "Rejected" and reason in first.message
    assert run_state(mix, tmp_path / "out").name == "Rejected"
    third = run_state(mix, tmp_path / "out")
    assert third.name == "Promoted" and third.result()["promoted"]
    registry = json.loads((tmp_path / "out" / "registry.json").read_text())
    assert [h["decision"] for h in registry["history"]] == ["rejected", "rejected", "promoted"]
    assert registry["promoted"]["metrics"]["mean"] == 5.0


def test_a_registry_left_with_a_null_mean_does_not_jam_the_next_runs(tmp_path: Path, source: Path, stages) -> None:
    fake = stages([6.0, 5.0])
    out = tmp_path / "out"
    out.mkdir()
    old = {"checkpoint": "/old.pth", "benchmark": "aflw2000-3d-fold1of2", "metrics": {"mean": None}}
    (out / "registry.json").write_text(json.dumps({"promoted": old, "history": [{**old, "decision": "promoted"}]}))
    mix = write_mix(tmp_path / "mix.yaml", source)

    first = run(mix, out, warm_start=True)
    second = run(mix, out, warm_start=True)

    assert first["promoted"] and "unusable" in first["notes"][0]
    assert fake.trains[0]["init_from"] is None  # the bad entry is not warm-started from
    assert second["promoted"] and fake.trains[1]["init_from"] == first["candidate"]["checkpoint"]


def test_changed_inputs_or_config_build_a_new_shard_set(tmp_path: Path, source: Path, stages) -> None:
    fake = stages([5.0, 4.0, 3.0])  # each better than the last
    mix = write_mix(tmp_path / "mix.yaml", source)
    first = run(mix, tmp_path / "out")

    annotation = sorted(source.glob("*.mat"))[0]  # fold 0: the first image is in the plan
    os.utime(annotation, ns=(annotation.stat().st_atime_ns, annotation.stat().st_mtime_ns + 10**9))
    touched = run(mix, tmp_path / "out")
    reseeded = run(write_mix(mix, source, seed=1), tmp_path / "out")

    assert first["rebuilt"] and touched["rebuilt"] and reseeded["rebuilt"]
    assert len({first["shard_dir"], touched["shard_dir"], reseeded["shard_dir"]}) == 3
    assert fake.builds == [first["shard_dir"], touched["shard_dir"], reseeded["shard_dir"]]
    assert [t["shard_dir"] for t in fake.trains] == fake.builds


def test_warm_start_trains_from_the_promoted_checkpoint(tmp_path: Path, source: Path, stages) -> None:
    fake = stages([5.0, 4.0])
    mix = write_mix(tmp_path / "mix.yaml", source)

    first = run(mix, tmp_path / "out", warm_start=True)  # nothing promoted yet: from scratch
    run(mix, tmp_path / "out", warm_start=True)

    assert fake.trains[0]["init_from"] is None
    assert fake.trains[1]["init_from"] == first["candidate"]["checkpoint"]


def test_a_failed_stage_fails_the_run_and_records_nothing(
    tmp_path: Path, source: Path, stages, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages([5.0])

    def broken(*args, **kwargs):
        raise RuntimeError("training diverged")

    monkeypatch.setattr(retrain, "train_flow", broken)
    with pytest.raises(RuntimeError, match="training diverged"):
        run(write_mix(tmp_path / "mix.yaml", source), tmp_path / "out")
    assert not (tmp_path / "out" / "registry.json").exists()


@pytest.mark.parametrize(
    ("train_fold", "train_folds", "eval_fold", "eval_folds", "overlap"),
    [(0, 2, 1, 2, False), (0, 2, 0, 2, True), (0, 2, 2, 20, True), (0, 2, 3, 20, False), (0, 2, None, 2, True)],
)
def test_evaluation_images_must_be_held_out(
    tmp_path: Path,
    source: Path,
    train_fold: int,
    train_folds: int,
    eval_fold: int | None,
    eval_folds: int,
    overlap: bool,
) -> None:
    src = {"kind": "aflw2000_3d", "root": str(source), "fold": train_fold, "n_folds": train_folds}
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({"name": "t", "sources": [src]}))
    mix = load_mix(tmp_path / "mix.yaml")
    if overlap:
        with pytest.raises(ValueError, match="overlaps"):
            retrain.check_held_out(mix, "aflw2000-3d", eval_fold, eval_folds)
    else:
        retrain.check_held_out(mix, "aflw2000-3d", eval_fold, eval_folds)


def test_a_missing_shard_set_fails_the_train_flow_at_once_without_retries(tmp_path: Path) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.train import train_flow

    state = train_flow(
        "configs/train/test.yaml", str(tmp_path / "no-shards"), str(tmp_path / "run"), progress=False,
        return_state=True,
    )  # fmt: skip
    assert state.is_failed()
    with pytest.raises(UserError, match="not a shard set"):
        state.result()
    with get_client(sync_client=True) as client:
        wanted = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        (fit_run,) = client.read_task_runs(flow_run_filter=wanted)
    assert fit_run.name.startswith("fit") and fit_run.run_count == 1 and fit_run.state.is_failed()


@pytest.mark.parametrize(
    ("error", "transient"),
    [(UserError("x"), False), (FileNotFoundError("m"), False), (ValueError("v"), False), (KeyError("k"), False),
     (OSError(28, "No space left on device"), True), (RuntimeError("DataLoader worker killed"), True),
     (ConnectionError("reset"), True), (None, True)],
)  # fmt: skip
def test_only_failures_that_can_go_differently_are_retried(error: BaseException | None, transient: bool) -> None:
    assert is_transient(error) is transient
