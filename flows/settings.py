"""The environment every process of this project runs with, defined once: Prefect settings, data root, malloc.

Used by `r3fa demo` (embedded Prefect backend), by `scripts/prefect_services.py` (server, worker, deploy), by
the Makefile (its recipes run through `python -m flows.settings -- COMMAND`) and by `prefect.yaml`, whose
deployments' `job_variables.env` read these variables (`{{ $R3FA_DATA }}`...) when `make deploy` runs
`prefect deploy` with them. The module does not import Prefect: the settings must be in the environment
before Prefect is imported.

    python -m flows.settings [--home DIR] [--api-url URL] [--ui]    # `export KEY=VALUE` lines for a shell
    python -m flows.settings [...] -- COMMAND ARGS...                # run COMMAND with them
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from r3fa.paths import PROJECT_ROOT, data_root

DEFAULT_HOME = PROJECT_ROOT / "runs" / "prefect"
DEFAULT_PORT = 4200
# glibc's default malloc thresholds make CPU training 2-5x slower here (docs/benchmarks.md); glibc reads them
# only when a process starts, so they must be in the environment of the process that trains.
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=4294967296"


def api_url(port: int = DEFAULT_PORT) -> str:
    """The API of the project's Prefect server on 127.0.0.1:`port`."""
    return f"http://127.0.0.1:{port}/api"


def prefect_settings(home: Path, api_url: str | None = None, ui: bool = False) -> dict[str, str]:
    """Environment variables for a Prefect process with its home in `home`.

    Args:
        home: PREFECT_HOME (database, logs, pid files).
        api_url: the server to talk to; None: Prefect's embedded temporary server.
        ui: serve the web UI (the long-running server does; the demo's temporary one does not).

    Returns:
        The variables. Telemetry is off: it tries the network and can lock the SQLite file.
    """
    settings = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "true" if ui else "false",
    }
    if api_url:
        settings["PREFECT_API_URL"] = api_url
    return settings


def run_environment(home: Path = DEFAULT_HOME, api_url: str | None = None, ui: bool = False) -> dict[str, str]:
    """Everything a process of this project needs: `prefect_settings`, `R3FA_DATA` and `GLIBC_TUNABLES`.

    `R3FA_DATA` is `r3fa.paths.data_root()` as an absolute path, so a worker or a deployment started
    elsewhere finds the same folder; `GLIBC_TUNABLES` keeps the caller's value when set.

    Raises:
        FileNotFoundError: the reference data is not where `R3FA_DATA` (or the default) says.
    """
    return {
        **prefect_settings(home, api_url, ui),
        "R3FA_DATA": str(data_root().resolve()),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES") or GLIBC_TUNABLES,
    }


def exports(env: dict[str, str]) -> str:
    """`env` as shell `export` lines, quoted."""
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())


def main(argv: list[str] | None = None) -> None:
    """Print the project's environment as `export` lines, or run the command after `--` in it."""
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="PREFECT_HOME")
    parser.add_argument("--api-url", default=None, help="the Prefect server's API (default: none, embedded)")
    parser.add_argument("--ui", action="store_true", help="PREFECT_UI_ENABLED=true")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        env = run_environment(args.home.resolve(), args.api_url, args.ui)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if command:
        Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect makes only the last level itself
        os.execvpe(command[0], command, {**os.environ, **env})
    print(exports(env))


if __name__ == "__main__":
    main()
