"""`r3fa synth`: face-profiling synthesis, looked at (`preview`)."""

from __future__ import annotations

from pathlib import Path

import cv2
import typer

app = typer.Typer(
    help="Face profiling: synthesise rotated profile views of labelled faces.",
    epilog="Example: r3fa synth preview IMAGE.jpg --mat IMAGE.mat (see r3fa synth preview --help)",
    no_args_is_help=True,
)


@app.command(
    epilog="Example:\n\nr3fa synth preview ../shared/data/300w_lp_sample/IBUG_image_008_1_0.jpg "
    "--mat ../shared/data/300w_lp_sample/IBUG_image_008_1_0.mat --yaw-steps 20,40 --out sheet.png"
)
def preview(
    image: Path = typer.Argument(..., exists=True, dir_okay=False, help="source image"),
    mat: Path = typer.Option(..., "--mat", exists=True, dir_okay=False, help="its 300W-LP-format .mat label"),
    yaw_steps: str = typer.Option("20,40,60", "--yaw-steps", help="comma-separated yaw increments, degrees"),
    out: Path = typer.Option(Path("sheet.png"), "--out", help="PNG to write"),
    holes: bool = typer.Option(False, "--holes", help="tint face pixels without source texture red"),
) -> None:
    """Write a sheet: the source crop and its synthesised views, with their landmarks drawn."""
    from r3fa.errors import UserError
    from r3fa.io import BadInputError
    from r3fa.profiling.preview import preview_sheet
    from r3fa.readers import SourceItem, load_source_sample

    try:
        steps = [float(s) for s in yaw_steps.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"not a list of numbers: {yaw_steps!r}", param_hint="--yaw-steps") from None
    item = SourceItem(image.stem, "preview", image.stem, str(image), str(mat))
    try:
        base = load_source_sample(item)
    except BadInputError as err:
        raise UserError(f"{err.path}: {err.reason}") from None
    sheet = preview_sheet(base, steps, show_holes=holes)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet):
        raise typer.BadParameter(f"cannot write {out}", param_hint="--out")
    typer.echo(f"wrote {out} ({len(steps)} views)")
