"""The project's environment, defined once (flows/settings.py), reaches every process: shells, the Makefile's
recipes, the background services and the deployments; the server serves its UI; `start` twice is fine.

The first two cases run `python -m flows.settings` as the Makefile does; the third reads the real environment
of the running server and worker from /proc, fetches the UI page and starts the services a second time (the
services of tests/conftest.py, shared with the other Prefect tests); the last checks that prefect.yaml gives
every deployment exactly these variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.settings import GLIBC_TUNABLES, run_environment
from r3fa.paths import data_root

ROOT = Path(__file__).resolve().parents[1]
SERVICES = [sys.executable, str(ROOT / "scripts" / "prefect_services.py")]
SHOW_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


def settings(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.settings", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def environ(pid: int) -> dict[str, str]:
    """The environment process `pid` was started with."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def test_a_command_runs_in_the_project_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "PREFECT_HOME")}
    done = settings("--home", str(tmp_path), "--", sys.executable, "-c", SHOW_ENV, env=env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["GLIBC_TUNABLES"] == GLIBC_TUNABLES
    assert seen["R3FA_DATA"] == str(data_root().resolve())
    assert seen["PREFECT_HOME"] == str(tmp_path.resolve())
    assert seen["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and seen["PREFECT_UI_ENABLED"] == "false"


def test_missing_reference_data_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = settings(env={**os.environ, "R3FA_DATA": str(tmp_path / "nowhere")})
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1 and "R3FA_DATA" in done.stderr


@pytest.mark.slow
def test_services_get_the_environment_serve_the_ui_and_start_twice(prefect_services: dict[str, str]) -> None:
    home = Path(prefect_services["PREFECT_HOME"])
    api = prefect_services["PREFECT_API_URL"]
    port = api.removesuffix("/api").rsplit(":", 1)[1]
    pids = {name: int((home / f"{name}.pid").read_text()) for name in ("server", "worker")}
    worker, server = environ(pids["worker"]), environ(pids["server"])
    # glibc parses GLIBC_TUNABLES in place at start-up: /proc shows the value cut after the first tunable
    assert worker["GLIBC_TUNABLES"] == GLIBC_TUNABLES.split(":")[0]
    assert worker["R3FA_DATA"] == str(data_root().resolve())
    assert worker["PREFECT_API_URL"] == api and worker["PREFECT_HOME"] == str(home)
    assert server["PREFECT_UI_ENABLED"] == "true"

    with urllib.request.urlopen(api.removesuffix("/api") + "/", timeout=30) as page:
        assert page.status == 200 and page.headers.get_content_type() == "text/html"
        assert b"<html" in page.read()

    again = subprocess.run(
        [*SERVICES, "start", "--home", str(home), "--port", port],
        env=prefect_services, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert {name: int((home / f"{name}.pid").read_text()) for name in pids} == pids
    assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())


def test_every_deployment_gets_the_project_environment() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env == {key: f"{{{{ ${key} }}}}" for key in run_environment()}, deployment["name"]
