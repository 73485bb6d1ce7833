"""Entry point of the `r3fa` command: assembles the command groups, and turns a caller's mistake into one line.

Each group lives in its own module (`cli/<group>.py`) and exposes `app` (a group) or `register(app)`
(top-level commands).

Every command runs through `run`, the one place where errors meet the user: a caller's mistake is one line
`r3fa: error: ...` on stderr and exit code 2, never a traceback. A mistake is an `r3fa.errors.UserError`, a
pydantic `ValidationError` (summarised as `field.path: message`), a YAML error, a click usage error (unknown
option, bad value), or a `FileNotFoundError`/`IsADirectoryError`/`NotADirectoryError`/`PermissionError`/
`FileExistsError` about a path the command was given (or a path inside it). Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
import yaml
from pydantic import ValidationError

from cli import bfm, data, demo, evaluate, experiment, fit, labels, model, predict, shards, synth, train
from r3fa import __version__
from r3fa.config import describe_validation_error
from r3fa.errors import UserError

try:  # typer 0.2x raises the exceptions of its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # older typer: click's
    from click import exceptions as click_errors

PROG = "r3fa"
USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def _names_an_argument(error: OSError, argv: list[str]) -> bool:
    """Whether the path of `error` is one of `argv`'s values or lies inside one (the caller's path)."""
    paths = [Path(os.fsdecode(name)).absolute() for name in (error.filename, error.filename2) if name is not None]
    values = [token.split("=", 1)[1] if token.startswith("--") and "=" in token else token for token in argv]
    given = [Path(value).absolute() for value in values if value and not value.startswith("-")]
    return any(path == arg or arg in path.parents for path in paths for arg in given)


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def run(typer_app: typer.Typer, argv: list[str]) -> int:
    """Run the command line `argv` (without the program name) of `typer_app`; returns the exit code."""
    command = typer.main.get_command(typer_app)
    try:
        result = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click_errors.NoArgsIsHelpError as err:
        typer.echo(err.ctx.get_help())
        return 0
    except click_errors.ClickException as err:
        message = err.format_message()
    except typer.Abort:
        message = "aborted"
    except UserError as err:
        message = str(err)
    except ValidationError as err:
        message = describe_validation_error(err)
    except yaml.YAMLError as err:
        message = f"malformed YAML: {err}"
    except USER_OS_ERRORS as err:
        if not _names_an_argument(err, argv):
            raise
        message = f"{err.filename}: {err.strerror or type(err).__name__}"
    else:
        return result if isinstance(result, int) else 0
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return 2


class R3faApp(typer.Typer):
    """The `r3fa` typer app; calling it (the console script) goes through `run`."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        sys.exit(run(self, sys.argv[1:]))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


app = R3faApp(
    name="r3fa",
    help="Build R3FA training data, train MobDenseNet and evaluate NME on AFLW2000-3D / AFLW.",
    epilog="Examples:\n\nr3fa demo\n\nr3fa predict ../shared/data/aflw2000_3d/image00002.jpg\n\n"
    "Every command has its own examples: r3fa COMMAND --help",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(bfm.app, name="bfm")
app.add_typer(data.app, name="data")
app.add_typer(labels.app, name="labels")
app.add_typer(model.app, name="model")
app.add_typer(shards.app, name="shards")
app.add_typer(synth.app, name="synth")
predict.register(app)
evaluate.register(app)
demo.register(app)
train.register(app)
experiment.register(app)
fit.register(app)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="print the version"),
) -> None:
    """Build R3FA training data, train MobDenseNet and evaluate NME on AFLW2000-3D / AFLW."""


if __name__ == "__main__":
    app()
