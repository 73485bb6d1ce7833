"""`r3fa model`: (being built)."""

import typer

app = typer.Typer(help="(being built)", no_args_is_help=True)
