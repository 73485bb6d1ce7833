"""Start and stop a local Prefect server and a process worker in the background, by pid file.

`make server` / `make worker` run them in the foreground (two terminals); this helper is for a single shell,
for the integration test and for machines without a terminal multiplexer. Both processes get the project's
Prefect settings (home under `runs/prefect` unless `--home`, telemetry off, no UI), write their logs and pid
files into the home folder, and are stopped by those pids only: the server with one SIGTERM, the worker
with two (the first asks it to finish, the second stops it), escalating to SIGKILL if a process outlives them.

    .venv/bin/python scripts/prefect_services.py start [--port 4200] [--home runs/prefect]
    eval "$(.venv/bin/python scripts/prefect_services.py env)"    # point this shell's prefect at the server
    .venv/bin/python scripts/prefect_services.py stop

Run it with the project's Python: the worker runs every flow with the interpreter that started it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.settings import DEFAULT_HOME, prefect_settings
from r3fa.paths import PROJECT_ROOT

POOL = "r3fa-process"
SERVICES = ("worker", "server")  # stop order: the worker first, it reports to the server


def prefect_env(home: Path, port: int) -> dict[str, str]:
    """The project's Prefect settings (`flows.settings`) for a process that talks to the server on `port`."""
    return prefect_settings(home, f"http://127.0.0.1:{port}/api")


def _prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def _pid_file(home: Path, name: str) -> Path:
    return home / f"{name}.pid"


def _alive(pid: int) -> bool:
    """Whether `pid` is a live prefect process (a recycled pid of another program does not count)."""
    try:
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running(home: Path, name: str) -> int | None:
    """The pid of the service `name` started under `home`, when it is still running."""
    path = _pid_file(home, name)
    if not path.is_file():
        return None
    pid = int(path.read_text().split()[0])
    return pid if _alive(pid) else None


def _spawn(home: Path, name: str, cmd: list[str], env: dict[str, str]) -> int:
    with (home / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _pid_file(home, name).write_text(f"{proc.pid}\n")
    return proc.pid


def wait_healthy(port: int, timeout: float = 60.0) -> None:
    """Block until the server's `/api/health` answers.

    Raises:
        TimeoutError: no answer within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server on port {port} was not healthy after {timeout:.0f} s")


def start(home: Path, port: int, pool: str = POOL, limit: int = 1) -> dict[str, int]:
    """Start the server, create the process work pool, start a worker on it; returns their pids.

    Args:
        home: PREFECT_HOME (database, logs, pid files).
        port: the server's port on 127.0.0.1.
        pool: the process work pool the deployments use.
        limit: flow runs the worker runs at once.

    Raises:
        RuntimeError: a service of this home is already running.
    """
    home.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        if running(home, name):
            raise RuntimeError(f"{name} already running (pid file {_pid_file(home, name)}); stop it first")
    env = {**os.environ, **prefect_env(home, port)}
    server = _prefect("server", "start", "--host", "127.0.0.1", "--port", str(port))
    pids = {"server": _spawn(home, "server", server, env)}
    try:
        wait_healthy(port)
        subprocess.run(
            _prefect("work-pool", "create", pool, "--type", "process", "--overwrite"),
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        worker = _prefect("worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit))
        pids["worker"] = _spawn(home, "worker", worker, env)
    except BaseException:
        stop(home)
        raise
    return pids


def _signal_until_gone(pid: int, signals: tuple[int, ...], grace: float) -> None:
    for sig in signals:
        if not _alive(pid):
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)  # the session it leads: the process and the flow runs it started


def stop(home: Path, grace: float = 10.0) -> list[str]:
    """Stop the worker (two SIGTERMs) and then the server (one) started under `home`; returns what was stopped."""
    stopped = []
    for name in SERVICES:
        pid = running(home, name)
        if pid is not None:
            _signal_until_gone(pid, (signal.SIGTERM, signal.SIGTERM) if name == "worker" else (signal.SIGTERM,), grace)
            stopped.append(f"{name} (pid {pid})")
        _pid_file(home, name).unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> None:
    """Command line: `start`, `stop`, `status` or `env` (shell exports for talking to the server)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="PREFECT_HOME")
    parser.add_argument("--port", type=int, default=4200, help="server port on 127.0.0.1")
    parser.add_argument("--pool", default=POOL, help="process work pool of the worker")
    parser.add_argument("--limit", type=int, default=1, help="flow runs the worker runs at once")
    args = parser.parse_args(argv)
    home = args.home.resolve()
    if args.command == "start":
        pids = start(home, args.port, args.pool, args.limit)
        print(f"server pid {pids['server']}, worker pid {pids['worker']} (pool {args.pool}); logs in {home}")
        print(f"API: http://127.0.0.1:{args.port}/api")
    elif args.command == "stop":
        print("stopped: " + (", ".join(stop(home)) or "nothing was running"))
    elif args.command == "status":
        for name in SERVICES:
            pid = running(home, name)
            print(f"{name}: {'running, pid ' + str(pid) if pid else 'not running'}")
    else:
        print("\n".join(f"export {key}={value}" for key, value in prefect_env(home, args.port).items()))


if __name__ == "__main__":
    main()
