"""Where the research-only reference data and the derived caches live.

The reference data is never part of the project: it is read from `$R3FA_DATA` (default `../shared/data`
seen from the project root). Assets derived from it (the `.npz` morphable models) are cached under
`$R3FA_CACHE` (default `.cache/` in the project root), which git ignores.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The reference-data folder: `$R3FA_DATA`, else `../shared/data` beside the project."""
    configured = os.environ.get("R3FA_DATA")
    root = Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        raise FileNotFoundError(
            f"reference data not found at {root}; set R3FA_DATA to the folder that holds 3ddfa/, aflw2000_3d/, ..."
        )
    return root


def cache_root() -> Path:
    """Folder for derived, re-buildable files (never committed)."""
    root = Path(os.environ.get("R3FA_CACHE", PROJECT_ROOT / ".cache"))
    root.mkdir(parents=True, exist_ok=True)
    return root
