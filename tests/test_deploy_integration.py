"""The deployments end to end: a real Prefect server and process worker, `prefect deploy --all`, two runs.

What a team does with prefect.yaml, on tiny configs (configs/deploy/): start the services with
scripts/prefect_services.py (free port, PREFECT_HOME in a temporary folder), deploy every deployment from the
project root, check the weekly schedule through the API, then run `retrain-and-eval` twice through the
worker. The first candidate (a few training steps) is promoted; the second, a run whose optimisation
diverged (configs/deploy/diverged-train.yaml, mean NME ~128 % vs ~23 %), must be rejected with the reason in
the registry and its run must end in a state named Rejected. A few CPU steps do not beat the mean face
(measured on fold 1 of 20: candidate 23.19 %, mean-parameter baseline 22.97 %), so these runs pass
`baseline_margin` BASELINE_TOLERANCE (a 2-point tolerance) to exercise a promotion through the real stages;
the diverged run fails that bar too. Both runs use the same inputs, so the second reuses the first's shard
set. The services are stopped by pid in a finalizer, also when a check fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.settings import GLIBC_TUNABLES
from r3fa.paths import data_root

ROOT = Path(__file__).resolve().parents[1]
RETRAIN = "retrain-and-eval/retrain-and-eval"
BASELINE_TOLERANCE = -2.0  # see the module docstring: the tiny candidate is at mean-face quality


def _run(cmd: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


@pytest.fixture(scope="module")
def deployed(prefect_services: dict[str, str]) -> Iterator[dict[str, str]]:
    """`prefect deploy --all` from the project root; yields the services' environment with the API URL set."""
    _run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], prefect_services)
    with temporary_settings({PREFECT_API_URL: prefect_services["PREFECT_API_URL"]}):
        yield prefect_services


def retrain(out: Path, train: str) -> FlowRun:
    """Run `retrain-and-eval` through the worker on the tiny configs; returns the finished flow run."""
    parameters = {
        "mix": "configs/deploy/tiny-mix.yaml",
        "train": train,
        "out_dir": str(out),
        "registry": str(out / "registry.json"),
        "eval_fold": 1,
        "n_folds": 20,
        "build_workers": 0,
        "baseline_margin": BASELINE_TOLERANCE,
    }
    run = run_deployment(RETRAIN, parameters=parameters, timeout=300, poll_interval=2)
    assert run.state is not None and run.state.is_completed(), f"flow run {run.name} ended {run.state}"
    return run


def artifacts(run: FlowRun) -> dict[str, str]:
    """The artifacts that `run` itself created, by key."""
    own = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=own)
    return {artifact.key: artifact.data for artifact in found}


@pytest.mark.slow
def test_deploy_schedule_and_two_retrain_runs(deployed: dict[str, str], tmp_path: Path) -> None:
    with get_client(sync_client=True) as client:
        names = {deployment.name for deployment in client.read_deployments()}
        weekly = client.read_deployment_by_name(RETRAIN)
    assert names == {"build-shards", "train", "evaluate", "retrain-and-eval", "experiment"}
    (schedule,) = weekly.schedules
    assert schedule.active and schedule.schedule.cron == "0 3 * * 1" and schedule.schedule.timezone == "Europe/Berlin"
    assert weekly.work_pool_name == "r3fa-process"
    job_env = weekly.job_variables["env"]  # prefect.yaml's {{ $NAME }}, filled from flows/settings.py at deploy
    assert job_env["GLIBC_TUNABLES"] == GLIBC_TUNABLES and job_env["R3FA_DATA"] == str(data_root().resolve())

    first = retrain(tmp_path, "configs/deploy/tiny-train.yaml")
    registry = json.loads((tmp_path / "registry.json").read_text())
    promoted = registry["promoted"]
    assert promoted["run_id"] == str(first.id) and Path(promoted["checkpoint"]).is_file()
    assert promoted["benchmark"] == "aflw2000-3d-fold1of20" and first.state.name == "Promoted"
    assert promoted["metrics"]["mean"] < promoted["baseline"]["mean"] - BASELINE_TOLERANCE
    shown = artifacts(first)
    assert "Candidate PROMOTED" in shown["retrain-decision"] and "built by this run" in shown["retrain-decision"]
    assert json.loads(shown["retrain-nme"])[0]["mean (%)"] == round(promoted["metrics"]["mean"], 3)

    second = retrain(tmp_path, "configs/deploy/diverged-train.yaml")
    registry = json.loads((tmp_path / "registry.json").read_text())
    rejected = registry["history"][-1]
    assert registry["promoted"] == promoted, "the diverged candidate replaced the trained one"
    assert [h["decision"] for h in registry["history"]] == ["promoted", "rejected"]
    assert rejected["run_id"] == str(second.id) and second.state.name == "Rejected"
    assert rejected["reason"].startswith(
        f"mean NME {rejected['metrics']['mean']:.3f} % does not beat the mean-parameter baseline "
        f"{rejected['baseline']['mean']:.3f} %"
    )
    assert second.state.message == rejected["reason"]
    decision = artifacts(second)["retrain-decision"]
    assert "Candidate REJECTED" in decision and rejected["reason"] in decision and "reused" in decision
