"""Shared fixtures: the reference-data root and small real inputs from it."""

from __future__ import annotations

import os
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
