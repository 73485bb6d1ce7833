"""`r3fa bfm`: (being built)."""

import typer

app = typer.Typer(help="(being built)", no_args_is_help=True)
