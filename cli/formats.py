"""The `--format` choice that every `r3fa` command with a report shares: a rich table for people, JSON for
scripts and tests (tests assert on JSON, never on rendered tables)."""

from __future__ import annotations

from enum import Enum


class OutputFormat(str, Enum):
    """How a command prints its result."""

    table = "table"
    json = "json"
