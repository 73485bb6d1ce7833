"""`r3fa predict`: 3DMM parameters, head pose and 68 landmarks of faces in real images, from the terminal.

The face is located by a roi box: given (`--roi`), derived from landmarks (`--landmarks FILE`, `roi_from_landmarks`),
or, when neither is given, from the annotation beside the image (same stem, `.mat`, `.pts` or `.ljson`). There is
no face detector here. A folder is processed in batches (images without a roi source are listed and skipped).
The network, its whitening and crop convention come from `r3fa.predictor.load_predictor`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cli.formats import OutputFormat

if TYPE_CHECKING:
    from r3fa.crop import CropConvention
    from r3fa.morphable import MorphableModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SIDECAR_SUFFIXES = (".mat", ".pts", ".ljson")
DEFAULT_MODEL = "mobilenet_v1"
DEFAULT_CHECKPOINT = "3ddfa_v2/weights/mb05_120x120.pth"  # under the reference-data root



def _parse_roi(text: str) -> np.ndarray:
    try:
        roi = np.array([float(v) for v in text.split(",")], np.float64)
    except ValueError:
        roi = np.empty(0)
    if roi.shape != (4,) or not np.isfinite(roi).all() or roi[2] <= roi[0] or roi[3] <= roi[1]:
        raise typer.BadParameter(f"expected x0,y0,x1,y1 with x1 > x0 and y1 > y0, got {text!r}", param_hint="--roi")
    return roi


def _sidecar(image: Path) -> Path | None:
    """The annotation file beside an image (same stem), if any."""
    return next((p for s in SIDECAR_SUFFIXES if (p := image.with_suffix(s)).is_file()), None)


def _roi_for(image: Path, roi: np.ndarray | None, landmarks: Path | None) -> tuple[np.ndarray, str]:
    """The roi of one image and where it came from; raises BadInputError when there is none."""
    from r3fa.crop import roi_from_landmarks
    from r3fa.io import BadInputError, read_landmarks_file

    if roi is not None:
        return roi, "--roi"
    source = landmarks or _sidecar(image)
    if source is None:
        raise BadInputError(image, f"no roi: give --roi or --landmarks, or put a {'/'.join(SIDECAR_SUFFIXES)} beside it")
    return roi_from_landmarks(read_landmarks_file(source)), str(source)


def _skip_or_fail(error: Exception, folder: bool, err: Console) -> None:
    """In folder mode an unusable image is listed and skipped; a single image ends the command (exit 2)."""
    if not folder:
        err.print(f"error: {error}", style="red", markup=False)
        raise typer.Exit(2)
    err.print(f"skipped {error}", markup=False)


def _result(image: Path, roi: np.ndarray, source: str, params: np.ndarray, landmarks: np.ndarray) -> dict:
    from r3fa.params import pose_degrees

    pitch, yaw, roll = pose_degrees(params).tolist()
    return {
        "image": str(image),
        "roi": roi.tolist(),
        "roi_source": source,
        "params": params.tolist(),
        "pose_degrees": {"pitch": pitch, "yaw": yaw, "roll": roll},
        "landmarks": np.round(landmarks, 3).tolist(),
    }


def _print_table(results: list[dict], console: Console) -> None:
    if len(results) == 1:
        r = results[0]
        params = np.asarray(r["params"])
        head = Table(title=f"{r['image']} (roi {', '.join(f'{v:.1f}' for v in r['roi'])} from {r['roi_source']})")
        for column in ("pitch", "yaw", "roll"):
            head.add_column(f"{column} (deg)", justify="right")
        head.add_row(*(f"{r['pose_degrees'][k]:.2f}" for k in ("pitch", "yaw", "roll")))
        console.print(head)
        table = Table(title="62 parameters")
        table.add_column("part")
        table.add_column("values")
        for name, part in (("pose sR|t (12)", params[:12]), ("shape (40)", params[12:52]), ("expression (10)", params[52:])):
            table.add_row(name, " ".join(f"{v:.4g}" for v in part))
        console.print(table)
        lms = Table(title="68 landmarks (image pixels)")
        for column in ("#", "x", "y", "z"):
            lms.add_column(column, justify="right")
        for k, (x, y, z) in enumerate(np.asarray(r["landmarks"]).T):
            lms.add_row(str(k), f"{x:.2f}", f"{y:.2f}", f"{z:.2f}")
        console.print(lms)
        return
    table = Table(title="pose (degrees)")
    for column in ("image", "pitch", "yaw", "roll", "roi from"):
        table.add_column(column)
    for r in results:
        p = r["pose_degrees"]
        table.add_row(Path(r["image"]).name, f"{p['pitch']:.2f}", f"{p['yaw']:.2f}", f"{p['roll']:.2f}", r["roi_source"])
    console.print(table)


def _write_outputs(
    result: dict,
    image: np.ndarray,
    params: np.ndarray,
    overlay: Path | None,
    mesh: Path | None,
    convention: CropConvention,
    grid: MorphableModel | None,
) -> None:
    """Overlay PNG and/or OBJ mesh (the grid model posed in image pixels) of one prediction."""
    import cv2

    from r3fa.draw import draw_landmarks
    from r3fa.labels import landmarks_in_image
    from r3fa.mesh_io import write_obj

    if overlay is not None:
        radius = max(1, round(max(image.shape[:2]) / 300))
        overlay.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(overlay), draw_landmarks(image, np.asarray(result["landmarks"]), radius=radius)):
            raise typer.BadParameter(f"cannot write {overlay}", param_hint="--overlay")
    if mesh is not None:
        vertices = landmarks_in_image(grid, params, np.asarray(result["roi"]), convention)
        write_obj(mesh, vertices, grid.triangles)


def predict_command(
    target: Path = typer.Argument(
        ..., exists=True, help="an image, or a folder of images (jpg, png, bmp, ppm, pgm, tif, webp)"
    ),
    roi: str | None = typer.Option(None, "--roi", help="face box x0,y0,x1,y1 in image pixels (one image only)"),
    landmarks: Path | None = typer.Option(
        None,
        "--landmarks",
        exists=True,
        dir_okay=False,
        help="68-point .pts/.ljson/.mat; the roi is derived from it (one image only)",
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="registry name of the architecture (r3fa.models)"),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        dir_okay=False,
        help=f"r3fa checkpoint or 3DDFA-V2 .pth; default for mobilenet_v1: $R3FA_DATA/{DEFAULT_CHECKPOINT} (3DDFA-V2 mb05)",
    ),
    output_format: OutputFormat = typer.Option(OutputFormat.json, "--format", help="json, or rich tables"),
    json_list: bool = typer.Option(False, "--json-list", help="folder mode: one JSON list instead of JSON lines"),
    overlay: Path | None = typer.Option(
        None, "--overlay", help="PNG with the landmarks drawn; for a folder, a folder of <stem>.png"
    ),
    mesh: Path | None = typer.Option(
        None, "--mesh", help="OBJ of the posed 4096-point grid mesh in image pixels; for a folder, a folder of <stem>.obj"
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="images per forward pass (folder mode)"),
) -> None:
    """Predict the 62 parameters, pitch/yaw/roll (degrees) and 68 image-frame landmarks of a face.

    The roi comes from --roi, else from --landmarks, else from an annotation with the image's stem beside it
    (IMAGE.mat, IMAGE.pts or IMAGE.ljson, tried in that order). JSON output: image, roi, roi_source, params (62),
    pose_degrees {pitch, yaw, roll}, landmarks as three lists x, y, z of 68 values (image pixels)."""
    from r3fa.io import BadInputError, read_image
    from r3fa.morphable import load_model
    from r3fa.paths import data_root
    from r3fa.predictor import load_predictor, predict_in_images

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    folder = target.is_dir()
    if folder and (roi is not None or landmarks is not None):
        raise typer.BadParameter("--roi and --landmarks apply to one image; a folder uses the annotations beside its images")
    if checkpoint is None:
        if model != DEFAULT_MODEL:
            raise typer.BadParameter(f"model {model!r} needs --checkpoint", param_hint="--checkpoint")
        checkpoint = data_root() / DEFAULT_CHECKPOINT
    if not checkpoint.is_file():
        raise typer.BadParameter(f"no such checkpoint: {checkpoint}", param_hint="--checkpoint")
    fixed_roi = _parse_roi(roi) if roi is not None else None

    images = sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder else [target]
    if not images:
        raise typer.BadParameter(f"no images in {target}", param_hint="TARGET")
    jobs: list[tuple[Path, np.ndarray, str]] = []
    for image in images:
        try:
            jobs.append((image, *_roi_for(image, fixed_roi, landmarks)))
        except BadInputError as error:
            _skip_or_fail(error, folder, err)
    try:
        predictor = load_predictor(checkpoint, model_name=model)
    except (ValueError, RuntimeError, KeyError) as error:
        raise typer.BadParameter(f"cannot load {checkpoint} as {model!r}: {error}", param_hint="--checkpoint") from None
    grid = load_model("grid4096") if mesh is not None else None

    results: list[dict] = []
    with Progress(console=err, transient=True, disable=not folder) as bar:
        task = bar.add_task("predicting", total=len(jobs))
        for start in range(0, len(jobs), batch_size):
            batch, pixels = [], []
            for path, box, source in jobs[start : start + batch_size]:
                try:
                    pixels.append(read_image(path))
                    batch.append((path, box, source))
                except BadInputError as error:
                    _skip_or_fail(error, folder, err)
            if batch:
                params, points = predict_in_images(predictor, pixels, np.stack([b[1] for b in batch]))
                for (path, box, source), image, p, lm in zip(batch, pixels, params, points):
                    result = _result(path, box, source, p, lm)
                    results.append(result)
                    if overlay is not None or mesh is not None:
                        _write_outputs(
                            result,
                            image,
                            p,
                            overlay / f"{path.stem}.png" if folder and overlay else overlay,
                            mesh / f"{path.stem}.obj" if folder and mesh else mesh,
                            predictor.convention,
                            grid,
                        )
            bar.update(task, advance=len(jobs[start : start + batch_size]))

    if not results:
        err.print("no image could be used")
    elif output_format is OutputFormat.table:
        _print_table(results, Console())
    elif not folder:
        typer.echo(json.dumps(results[0], indent=2))
    elif json_list:
        typer.echo(json.dumps(results))
    else:
        for result in results:
            typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    """Adds the top-level `predict` command."""
    app.command(
        "predict",
        epilog="Examples:\n\n"
        "r3fa predict ../shared/data/aflw2000_3d/image00002.jpg\n\n"
        "r3fa predict ../shared/data/aflw2000_3d/image00002.jpg --format table --overlay overlay.png\n\n"
        "r3fa predict ../shared/data/300w_lp_sample --mesh meshes/ --json-list",
    )(predict_command)
