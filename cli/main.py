"""Entry point of the `r3fa` command: assembles the command groups.

Each group lives in its own module (`cli/<group>.py`) and exposes `app` (a group) or `register(app)`
(top-level commands).
"""

from __future__ import annotations

import typer

from cli import bfm, demo, evaluate, fit, labels, model, predict, shards, synth

app = typer.Typer(
    name="r3fa",
    help="Build R3FA training data, train MobDenseNet and evaluate NME on AFLW2000-3D / AFLW.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(bfm.app, name="bfm")
app.add_typer(labels.app, name="labels")
app.add_typer(model.app, name="model")
app.add_typer(shards.app, name="shards")
app.add_typer(synth.app, name="synth")
predict.register(app)
evaluate.register(app)
demo.register(app)
fit.register(app)

if __name__ == "__main__":
    app()
