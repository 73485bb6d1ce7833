"""`r3fa fit`: 300W-LP-format labels for a folder of images with 68 2D landmarks (`r3fa.fitting`).

Each image with points gets `<stem>.mat` (`Pose_Para`, `Shape_Para`, `Exp_Para`, `pt2d`, `pt3d_68`, `roi`,
readable by the project's 300W-LP reader); `fit.json` lists every image's fit NME and yaw and every image set
aside with its reason (a bad landmark file, or a fit whose NME exceeds `--max-nme`: no `.mat` for it);
`overlays.png` shows the annotated points (green) and the fitted label's landmarks (red) on the faces.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from cli.formats import OutputFormat

OVERLAY_FILE = "overlays.png"
SUMMARY_FILE = "fit.json"
CELL = 360  # side of one face on the overlay sheet


class Style(str, Enum):
    d2 = "2d"
    d3 = "3d"



def register(app: typer.Typer) -> None:
    """Add `r3fa fit` to the top-level command."""
    app.command(
        "fit",
        help=(
            "Fit 3DMM labels (pose, 40 shape, 10 expression) to the 68 2D landmarks of a folder of images and "
            "write 300W-LP-format .mat files and an overlay sheet.\n\n"
            "Example: r3fa fit ../shared/data/faces_68pts --out runs/fit/faces68\n\n"
            "Example (points in one array, 3D-style annotations): r3fa fit ../shared/data/aflw2000_3d --points "
            "../shared/data/3ddfa/test.configs/AFLW2000-3D-Reannotated.pts68.npy --style 3d --out runs/fit/aflw"
        ),
    )(fit)


def fit(
    images: Path = typer.Argument(..., help="folder of images with .pts/.ljson/.mat landmarks beside them"),
    out: Path = typer.Option(..., "--out", help="folder for the .mat files, fit.json and overlays.png"),
    points: Path | None = typer.Option(None, "--points", help=".npy of (N, 2, 68) points in sorted image order"),
    style: Style = typer.Option(Style.d2, "--style", help="2d: jaw on the visible outline (marching); 3d: no marching"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="fit the first N images only"),
    sheet: int = typer.Option(16, "--sheet", min=0, help="images on the overlay sheet (0: none)"),
    max_nme: float = typer.Option(5.0, "--max-nme", min=0.0, help="reject fits whose label NME (%) is above this"),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json (summary)"),
) -> None:
    """Fit every image of a folder; a bad annotation is reported with its reason and the rest go on."""
    import cv2
    import numpy as np
    from scipy.io import savemat

    from r3fa.crop import crop_image, image_to_crop, roi_from_landmarks
    from r3fa.atomic import atomic_writer, write_bytes_atomic, write_text_atomic
    from r3fa.draw import contact_sheet, draw_landmarks
    from r3fa.errors import UserError
    from r3fa.fitting import annotation_fields, fit_landmarks
    from r3fa.io import BadInputError, read_image
    from r3fa.landmarks68 import discover_landmarks68, read_points, settings_for
    from r3fa.readers import SourceItem

    if not images.is_dir():
        raise UserError(f"{images}: not a folder (give the folder of images with their 68-point files)")
    if points is not None and not points.is_file():
        raise UserError(f"--points {points}: no such file")
    inputs = discover_landmarks68(images, points, style.value, source="fit")[:limit]
    out.mkdir(parents=True, exist_ok=True)
    results, rejected, tiles, captions = [], [], [], []
    for entry in inputs:
        if not isinstance(entry, SourceItem):
            rejected.append({"path": entry.path, "reason": entry.reason})
            continue
        try:
            image = read_image(entry.image_path)
            points = read_points(entry)
            result = fit_landmarks(points, image.shape[0], settings_for(style.value), entry.landmark_path)
        except BadInputError as err:
            rejected.append({"path": err.path, "reason": err.reason})
            continue
        if not result.nme <= max_nme:
            rejected.append({"path": entry.landmark_path, "reason": f"fit NME {result.nme:.2f} % > {max_nme} %"})
            continue
        stem = Path(entry.image_path).stem
        with atomic_writer(out / f"{stem}.mat") as fh:
            savemat(fh, annotation_fields(result, points))
        results.append({"image": entry.image_path, "mat": str(out / f"{stem}.mat"), "nme": result.nme,
                        "residual_nme": result.residual_nme, "yaw_deg": result.yaw_deg})  # fmt: skip
        if len(tiles) < sheet:
            roi = roi_from_landmarks(points)  # the face, enlarged to the sheet's cell
            drawn = draw_landmarks(crop_image(image, roi, CELL), image_to_crop(points, roi, CELL), (0, 255, 0), 2)
            tiles.append(draw_landmarks(drawn, image_to_crop(result.landmarks, roi, CELL), (0, 0, 255), 2))
            captions.append(f"{stem[:16]} yaw {result.yaw_deg:+.0f} nme {result.nme:.2f}%")
    summary = {"fitted": len(results), "rejected": rejected, "style": style.value, "results": results}
    if results:
        summary["median_nme"] = float(np.median([r["nme"] for r in results]))
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    if tiles:
        ok, png = cv2.imencode(".png", contact_sheet(tiles, ncols=min(4, len(tiles)), captions=captions, cell=CELL))
        write_bytes_atomic(out / OVERLAY_FILE, png.tobytes())
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(summary))
        return
    for rejection in rejected:
        typer.echo(f"rejected {rejection['path']}: {rejection['reason']}")
    median = f", median NME {summary['median_nme']:.2f} %" if results else ""
    typer.echo(f"fitted {len(results)} image(s){median}, {len(rejected)} rejected -> {out}")
