"""`r3fa model`: inspect the registered architectures (`r3fa.models`).

`r3fa model summary NAME` builds the model and reports its trainable parameters, MACs of one 120x120 forward pass
(conv and linear layers, counted with forward hooks: `r3fa.models.summary`) and output size.
`r3fa model list` prints the registry's names.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cli.formats import OutputFormat

app = typer.Typer(
    help="Inspect the model architectures (registry, size, MACs).",
    epilog="Example:\n\nr3fa model summary mobilenet_v1",
    no_args_is_help=True,
)



def _parse_kwargs(pairs: list[str]) -> dict:
    """`key=value` pairs; values parsed as JSON where they can be (numbers, booleans), else kept as text."""
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--kw")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


@app.command("list", epilog="Example:\n\nr3fa model list")
def list_command() -> None:
    """Print the registered model names, one per line."""
    from r3fa.models import available

    typer.echo("\n".join(available()))


@app.command(
    "summary",
    epilog="Examples:\n\nr3fa model summary mobilenet_v1\n\n"
    "r3fa model summary mobilenet_v1 --kw widen_factor=0.5 --format json",
)
def summary_command(
    name: str = typer.Argument(..., help="registry name (see `r3fa model list`)"),
    kw: list[str] = typer.Option([], "--kw", help="constructor argument key=value, repeatable (e.g. widen_factor=0.5)"),
    size: int = typer.Option(120, "--size", min=32, help="input side in pixels"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="json or a table"),
) -> None:
    """Parameters, MACs (one forward pass at SIZE x SIZE) and output size of a model."""
    from r3fa.models import available, create
    from r3fa.models.summary import summarise

    if name not in available():
        raise typer.BadParameter(f"unknown model {name!r}: expected one of {', '.join(available())}", param_hint="NAME")
    kwargs = _parse_kwargs(kw)
    try:
        model = create(name, **kwargs)
    except TypeError as error:
        raise typer.BadParameter(f"{name}: {error}", param_hint="--kw") from None
    info = {"name": name, "kwargs": kwargs, "input_size": size, **summarise(model, size)}
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{name} at {size}x{size}")
    for column in ("params", "MACs", "output_dim"):
        table.add_column(column, justify="right")
    table.add_row(f"{info['params'] / 1e6:.3f} M", f"{info['macs'] / 1e6:.1f} M", str(info["output_dim"]))
    Console().print(table)
