"""Every `r3fa ... --help` page shows an example (the README promises one per command).

Walks the typer app's click command tree, so a command added later without an example fails here.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import typer

from cli.main import app


def _commands(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_command_and_group_help_has_an_example() -> None:
    commands = dict(_commands(typer.main.get_command(app), ("r3fa",)))
    leaves = [path for path, command in commands.items() if not isinstance(command, click.Group)]
    assert {"r3fa train", "r3fa shards build", "r3fa eval", "r3fa model summary"} <= set(leaves)
    pages = {path: f"{command.help or ''}{command.epilog or ''}" for path, command in commands.items()}
    missing = [path for path, page in pages.items() if "Example" not in page]
    assert missing == []

