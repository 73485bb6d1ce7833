"""The Prefect settings every process of this project runs with: its home, telemetry off, no UI.

One definition for `r3fa demo` (embedded backend) and `scripts/prefect_services.py` (server + worker).
This module does not import Prefect: the settings must be in the environment before Prefect is imported.
"""

from __future__ import annotations

from pathlib import Path

from r3fa.paths import PROJECT_ROOT

DEFAULT_HOME = PROJECT_ROOT / "runs" / "prefect"


def prefect_settings(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment variables for a Prefect process with its home in `home`, talking to `api_url` if given
    (else Prefect's embedded temporary server). Telemetry is off: it tries the network and can lock the
    SQLite file."""
    settings = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": "false",
    }
    if api_url:
        settings["PREFECT_API_URL"] = api_url
    return settings
