"""`r3fa evaluate`: (being built)."""

import typer


def register(app: typer.Typer) -> None:
    """Adds no command yet."""
