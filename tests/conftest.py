"""Shared fixtures: the reference-data root, small real inputs from it, and a real Prefect server and worker."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    from r3fa.paths import data_root as root

    return root()


@pytest.fixture(scope="session")
def aflw2000_dir(data_root: Path) -> Path:
    return data_root / "aflw2000_3d"


@pytest.fixture(scope="session")
def bfm68():
    from r3fa.morphable import load_model

    return load_model("bfm68")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_services(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    """A Prefect server and worker in the background (scripts/prefect_services.py, a free port, PREFECT_HOME
    in a temporary folder), started once for the whole session (each start costs ~20 s) and stopped by pid at its
    end; yields the environment of a client that talks to them (`prefect_services.py env`, the project's
    settings). A test that adds something global to the server (an automation) removes it itself."""
    services = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / "prefect_services.py")]
    home = tmp_path_factory.mktemp("prefect-home")
    where = ["--home", str(home), "--port", str(free_port())]
    env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "2"}  # the worker polls every 2 s, not 10
    request.addfinalizer(lambda: subprocess.run([*services, "stop", *where], env=env, timeout=120))
    subprocess.run([*services, "start", *where], env=env, check=True, timeout=180)
    exports = subprocess.run([*services, "env", *where], env=env, check=True, capture_output=True, text=True).stdout
    yield {**env, **dict(shlex.split(line)[1].split("=", 1) for line in exports.splitlines())}
    for log in ("worker.log", "server.log"):  # shown when a check failed
        print(f"--- {log} (tail)\n" + "\n".join((home / log).read_text().splitlines()[-40:]))
