"""`r3fa bfm`: build the morphable-model assets from the 3DDFA release, and describe one.

Thin wrapper over `r3fa.morphable` (`build_from_3ddfa`, `MorphableModel.save` / `.load`).
"""

from __future__ import annotations

import zipfile
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from r3fa.morphable import MODEL_NAMES, MorphableModel, build_from_3ddfa

app = typer.Typer(
    help="3D morphable-model assets (.npz): build them from the 3DDFA release files, inspect them.",
    epilog="Example:\n\nr3fa bfm info assets/grid4096.npz",
    no_args_is_help=True,
)


ModelName = Enum("ModelName", {name: name for name in MODEL_NAMES}, type=str)

BUILD_HELP = "\n\n".join(
    [
        "Build a morphable-model asset (.npz) from the 3DDFA release files.",
        "bfm68: the BFM at the 68 landmarks, 40 shape + 10 expression bases. "
        "grid4096: 4096 surface points on a 64x64 grid with two triangles per cell; its expression basis is "
        "derived from the 68-point one, as its notes say. "
        "dense_mean: the 53,215-vertex mean face with its 105,840 triangles, no bases.",
        "Examples:",
        "r3fa bfm build --from-3ddfa ../shared/data/3ddfa --out assets/bfm68.npz",
        "r3fa bfm build --from-3ddfa ../shared/data/3ddfa --out assets/grid4096.npz --model grid4096",
    ]
)
INFO_HELP = "\n\n".join(
    [
        "Describe a morphable-model asset: name, units, vertices, bases, landmarks, triangles, notes.",
        "Example:",
        "r3fa bfm info assets/grid4096.npz",
    ]
)


@app.command(help=BUILD_HELP)
def build(
    from_3ddfa: Path = typer.Option(
        ...,
        "--from-3ddfa",
        exists=True,
        file_okay=False,
        help="The 3DDFA release folder (holds c++/ and train.configs/).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Asset file to write (.npz; written atomically)."),
    model: ModelName = typer.Option(ModelName("bfm68"), "--model", "-m", help="Which model."),
) -> None:
    """Build one morphable-model asset from the 3DDFA release (see BUILD_HELP)."""
    path = build_from_3ddfa(from_3ddfa, model.value).save(out)
    typer.echo(f"wrote {model.value} to {path}")


@app.command(help=INFO_HELP)
def info(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="An asset written by `r3fa bfm build`."),
) -> None:
    """Describe a morphable-model asset (see INFO_HELP)."""
    try:
        asset = MorphableModel.load(path)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise typer.BadParameter(f"not a readable morphable-model asset: {err}", param_hint="PATH") from None
    table = Table(title=str(path), show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row("name", asset.name)
    table.add_row("units", asset.units)
    table.add_row("vertices", str(asset.num_vertices))
    table.add_row("bases", f"{asset.shape_basis.shape[1]} shape, {asset.exp_basis.shape[1]} expression")
    table.add_row("landmarks", str(asset.landmark_indices.size))
    table.add_row("triangles", "none" if asset.triangles is None else str(len(asset.triangles)))
    table.add_row("notes", asset.notes)
    for key, value in asset.meta.items():
        table.add_row(key, str(value))
    Console().print(table)
