"""Start and stop a local Prefect server (with its web UI) and a process worker; deploy with the project's settings.

`start` runs both in the background, by pid file (one shell, the integration tests, machines without a
terminal multiplexer); `server` and `worker` run one in the foreground (`make server` / `make worker`, two
terminals); `deploy` runs `prefect deploy --all` and sets up the retrain alert (`flows.alerts`). Every process
gets the project's environment from `flows.settings` (Prefect home under `runs/prefect` unless `--home`,
telemetry off, `R3FA_DATA`, the malloc tunables); the server binds 127.0.0.1 and serves the UI there, so the
links Prefect prints open. Logs and pid files go into the home folder; the services are stopped by those pids
only: the server with one SIGTERM, the worker with two (the first asks it to finish, the second stops it),
escalating to SIGKILL if a process outlives them. `start` when both already run says so and succeeds.

    .venv/bin/python scripts/prefect_services.py start [--port 4200] [--home runs/prefect]
    eval "$(.venv/bin/python scripts/prefect_services.py env)"    # point this shell's prefect at the server
    .venv/bin/python scripts/prefect_services.py deploy [--alert-webhook URL | --alert-block TYPE/NAME]
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

from flows.settings import DEFAULT_HOME, DEFAULT_PORT, api_url, exports, run_environment
from r3fa.paths import PROJECT_ROOT

POOL = "r3fa-process"
SERVICES = ("worker", "server")  # stop order: the worker first, it reports to the server


def prefect_env(home: Path, port: int) -> dict[str, str]:
    """The project's environment (`flows.settings`) for a process that serves or talks to the server on `port`."""
    return run_environment(home, api_url(port), ui=True)


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


def _create_pool(pool: str, env: dict[str, str]) -> None:
    subprocess.run(
        _prefect("work-pool", "create", pool, "--type", "process", "--overwrite"),
        env=env, check=True, capture_output=True,
    )  # fmt: skip


def _server_cmd(port: int) -> list[str]:
    return _prefect("server", "start", "--host", "127.0.0.1", "--port", str(port))


def _worker_cmd(pool: str, limit: int) -> list[str]:
    return _prefect("worker", "start", "--pool", pool, "--type", "process", "--limit", str(limit))


def start(home: Path, port: int, pool: str = POOL, limit: int = 1) -> dict[str, int]:
    """Start whichever of the server and the worker is not running (the server first, then the pool and the
    worker); returns the pids of those it started (empty when both were already running).

    Args:
        home: PREFECT_HOME (database, logs, pid files).
        port: the server's port on 127.0.0.1.
        pool: the process work pool the deployments use.
        limit: flow runs the worker runs at once.

    Raises:
        RuntimeError: the server this call started exited (e.g. another program holds the port).
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **prefect_env(home, port)}
    pids = {}
    try:
        if not running(home, "server"):
            pids["server"] = _spawn(home, "server", _server_cmd(port), env)
        wait_healthy(port)
        if "server" in pids and not _alive(pids["server"]):
            raise RuntimeError(f"the server exited (port {port} taken by another program?): see {home / 'server.log'}")
        if not running(home, "worker"):
            _create_pool(pool, env)
            pids["worker"] = _spawn(home, "worker", _worker_cmd(pool, limit), env)
    except BaseException:
        for name, pid in pids.items():  # only what this call started
            _stop_one(home, name, pid, grace=10.0)
        raise
    return pids


def foreground(home: Path, port: int, name: str, pool: str = POOL, limit: int = 1) -> None:
    """Replace this process with the server or the worker `name`, in the foreground, with the project's
    environment (`make server`, `make worker`)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **prefect_env(home, port)}
    if name == "server":
        cmd = _server_cmd(port)
    else:
        _create_pool(pool, env)
        cmd = _worker_cmd(pool, limit)
    os.chdir(PROJECT_ROOT)
    os.execve(cmd[0], cmd, env)


def deploy(home: Path, port: int, webhook: str | None, block: str | None) -> None:
    """`prefect deploy --all` from the project root with the project's environment (prefect.yaml's job
    variables read it), then the retrain alert (`flows.alerts`)."""
    env = {**os.environ, **prefect_env(home, port)}
    subprocess.run(_prefect("--no-prompt", "deploy", "--all"), cwd=PROJECT_ROOT, env=env, check=True)
    os.environ.update(env)  # before Prefect is imported: the alert talks to the same server
    from flows.alerts import ensure_retrain_alert

    print(ensure_retrain_alert(webhook, block))


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


def _stop_one(home: Path, name: str, pid: int, grace: float) -> None:
    """Stop the service `name`: the worker with two SIGTERMs, the server with one; then drop its pid file."""
    _signal_until_gone(pid, (signal.SIGTERM, signal.SIGTERM) if name == "worker" else (signal.SIGTERM,), grace)
    _pid_file(home, name).unlink(missing_ok=True)


def stop(home: Path, grace: float = 10.0) -> list[str]:
    """Stop the worker and then the server started under `home`; returns what was stopped."""
    stopped = []
    for name in SERVICES:
        pid = running(home, name)
        if pid is not None:
            _stop_one(home, name, pid, grace)
            stopped.append(f"{name} (pid {pid})")
        _pid_file(home, name).unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> None:
    """Command line: `start`, `stop`, `status`, `env` (shell exports), `server`, `worker` (foreground), `deploy`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env", "server", "worker", "deploy"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="PREFECT_HOME")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="server port on 127.0.0.1")
    parser.add_argument("--pool", default=POOL, help="process work pool of the worker")
    parser.add_argument("--limit", type=int, default=1, help="flow runs the worker runs at once")
    parser.add_argument(
        "--alert-webhook", default=os.environ.get("R3FA_ALERT_WEBHOOK") or None,
        help="deploy: URL the retrain alert posts to (default $R3FA_ALERT_WEBHOOK; none: an existing block only)",
    )  # fmt: skip
    parser.add_argument(
        "--alert-block", default=os.environ.get("R3FA_ALERT_BLOCK") or None,
        help="deploy: slug (type/name) of a saved notification block for the alert instead of the webhook block",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        _command(args)
    except FileNotFoundError as err:  # the reference data is missing: one line, a usage error
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def _command(args: argparse.Namespace) -> None:
    home = args.home.resolve()
    ui = f"http://127.0.0.1:{args.port}"
    if args.command == "start":
        before = {name: running(home, name) for name in SERVICES}
        pids = start(home, args.port, args.pool, args.limit)
        for name in reversed(SERVICES):
            state = f"started, pid {pids[name]}" if name in pids else f"already running, pid {before[name]}"
            print(f"{name}: {state}")
        print(f"UI: {ui}   API: {ui}/api   pool: {args.pool}   logs: {home}")
    elif args.command == "stop":
        print("stopped: " + (", ".join(stop(home)) or "nothing was running"))
    elif args.command == "status":
        for name in SERVICES:
            pid = running(home, name)
            print(f"{name}: {'running, pid ' + str(pid) if pid else 'not running'}")
    elif args.command == "env":
        print(exports(prefect_env(home, args.port)))
    elif args.command == "deploy":
        deploy(home, args.port, args.alert_webhook, args.alert_block)
    else:
        foreground(home, args.port, args.command, args.pool, args.limit)


if __name__ == "__main__":
    main()
