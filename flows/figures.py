"""Figures in the Prefect UI: PNG files published as markdown artifacts with the image embedded.

The flows write their figures (CED, best/worst sheet, training curves) to the run's folder on the worker's
disk, which a person at the UI cannot open. A markdown artifact whose image is a `data:` URI carries the
picture itself to the server, so the artifact's page in the UI shows it, with the file's path underneath for
whoever wants the original. A large figure is re-encoded as a JPEG that fits `MAX_EMBEDDED_BYTES`, so one
artifact never bloats the server's database; a missing or unreadable figure is named in the artifact instead
of stopping the flow (the figure is a by-product, the numbers are not).

One call per flow: `publish_evaluation` (an evaluation folder: its NME table, CED, per-|yaw|-bin CEDs, best
and worst images, optionally beside other runs via `compare_runs`), `publish_training_curves` (loss and
validation NME per epoch) and `publish_shard_sheet` (a contact sheet of a shard set's samples, drawn in
memory: the shard-set folder holds only the set). These are by-products, called after a flow's results are
written and recorded: a failure in one is logged as a warning and never fails the flow.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from r3fa.report import markdown_table, plot_training_curves

Figure = str | Path | bytes  # a PNG file, or PNG bytes drawn in memory

# the figures of an evaluation folder (`r3fa.evaluation.evaluate`), in the order they are shown
EVALUATION_FIGURES = {
    "CED, all images": "ced.png",
    "CED per |yaw| bin": "ced_bins.png",
    "best (top row) and worst images, with NME and yaw": "overlay_best_worst.png",
}

MAX_EMBEDDED_BYTES = 400_000  # per figure, before base64
MAX_EMBEDDED_SIDE = 1600  # pixels; larger images are scaled down before JPEG encoding
JPEG_SIDES = (MAX_EMBEDDED_SIDE, 1000, 600)  # tried in turn, each at every quality, until one fits
JPEG_QUALITIES = (90, 75, 60)


Result = TypeVar("Result")


def by_product(publish: Callable[..., Result]) -> Callable[..., Result | None]:
    """Run `publish`; when it raises, log a warning (in the flow run's log when there is one) and return None."""

    @functools.wraps(publish)
    def tolerant(*args: Any, **kwargs: Any) -> Result | None:
        try:
            return publish(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 (a figure must never fail the flow whose results it shows)
            try:
                logger = get_run_logger()
            except MissingContextError:
                logger = logging.getLogger(__name__)
            logger.warning("figures: %s skipped: %s: %s", publish.__name__, type(error).__name__, error)
            return None

    return tolerant


def _jpeg(raw: bytes) -> bytes | None:
    """An encoded image as a JPEG of at most `MAX_EMBEDDED_BYTES`: scaled to `MAX_EMBEDDED_SIDE`, then lower
    qualities and smaller sides until it fits; None if it cannot be decoded (or fits at no size tried)."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    for side in JPEG_SIDES:
        scale = min(1.0, side / max(image.shape[:2]))
        scaled = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        for quality in JPEG_QUALITIES:
            ok, data = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(data) <= MAX_EMBEDDED_BYTES:
                return data.tobytes()
    return None


def data_uri(figure: Figure) -> str | None:
    """A `data:` URI of a PNG file or PNG bytes: the PNG itself when small enough, else a JPEG that is; None
    when the file is missing or unreadable, or no encoding fits."""
    if isinstance(figure, bytes):
        raw = figure
    elif Path(figure).is_file():
        raw = Path(figure).read_bytes()
    else:
        return None
    if len(raw) <= MAX_EMBEDDED_BYTES and raw.startswith(b"\x89PNG"):
        return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
    jpeg = _jpeg(raw)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def figures_markdown(title: str, figures: Mapping[str, Figure], intro: str = "") -> str:
    """Markdown: the title, `intro`, then a heading per figure with the image embedded and its file below."""
    parts = [f"# {title}\n", intro]
    for name, figure in figures.items():
        uri = data_uri(figure)
        where = "" if isinstance(figure, bytes) else f"`{figure}`"
        image = f"![{name}]({uri})" if uri else "*(not available: the file is missing or unreadable)*"
        parts.append(f"## {name}\n\n{image}\n\n{where}\n")
    return "\n".join(part for part in parts if part)


def publish_figures(
    key: str, title: str, figures: Mapping[str, Figure], description: str | None = None, intro: str = ""
) -> UUID:
    """Publish `figures` (name -> PNG file or bytes) as one markdown artifact of the current flow or task run.

    Args:
        key: the artifact key (lowercase letters, digits and dashes).
        title: the artifact's heading.
        figures: figure name -> image, in the order they are shown.
        description: the artifact's description in the UI (default: `title`).
        intro: markdown shown between the title and the figures (e.g. the NME table).

    Returns:
        The artifact's id.
    """
    return create_markdown_artifact(
        key=key, markdown=figures_markdown(title, figures, intro), description=description or title
    )


@by_product
def compare_runs(runs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path] | None:
    """`r3fa.evaluation.write_comparison` of evaluation folders into `out_dir`; None (nothing written) when a
    folder lacks its `nme.json` or `errors.parquet` (e.g. an evaluation that refused a broken model)."""
    from r3fa.evaluation import write_comparison  # the evaluation engine only where a comparison is drawn

    if not all((Path(run) / name).is_file() for run in runs for name in ("nme.json", "errors.parquet")):
        return None
    return write_comparison(list(runs), out_dir)


@by_product
def publish_evaluation(
    eval_dir: str | Path, key: str, title: str, comparison: Mapping[str, str | Path] | None = None
) -> UUID:
    """Publish an evaluation folder: its NME table (Table-1 layout) and its figures.

    Args:
        eval_dir: a folder written by `r3fa.evaluation.evaluate` (a missing file is named, not fatal).
        key: the artifact key.
        title: the artifact's heading.
        comparison: the files of `r3fa.evaluation.write_comparison` for this run and others (`table`, `ced`,
            `ced_bins`): their table replaces the run's own, their CEDs follow the run's figures.
    """
    eval_dir = Path(eval_dir)
    report = eval_dir / "nme.json"
    if comparison:
        intro = Path(comparison["table"]).read_text()
    else:
        intro = markdown_table([json.loads(report.read_text())]) if report.is_file() else "*(no nme.json)*\n"
    figures: dict[str, Figure] = {name: eval_dir / file for name, file in EVALUATION_FIGURES.items()}
    if comparison:
        figures["CED of the compared runs"] = comparison["ced"]
        figures["CED of the compared runs per |yaw| bin"] = comparison["ced_bins"]
    return publish_figures(key, title, figures, f"NME table and figures of {eval_dir}", intro)


@by_product
def publish_training_curves(history: Sequence[dict], out_dir: str | Path, key: str = "train-figures") -> UUID:
    """Plot a run's per-epoch metrics into `out_dir/curves.png` and publish it."""
    path = plot_training_curves(history, Path(out_dir) / "curves.png") if history else Path(out_dir) / "curves.png"
    return publish_figures(key, f"Training curves of {out_dir}", {"loss and validation NME per epoch": path})


@by_product
def publish_shard_sheet(shard_dir: str | Path, n: int = 24, seed: int = 0, key: str = "build-dataset-figures") -> UUID:
    """Publish a contact sheet of `n` random samples of a shard set, their stored landmarks drawn."""
    import cv2

    from pipelines.inspect import read_samples
    from r3fa.draw import contact_sheet, draw_landmarks

    samples = read_samples(shard_dir, n, seed)
    figures: dict[str, Figure] = {}
    if samples:
        images = [draw_landmarks(image, landmarks, radius=2, scale=2.0) for _, image, landmarks in samples]
        ok, png = cv2.imencode(".png", contact_sheet(images, ncols=8, captions=[k[-20:] for k, _, _ in samples]))
        figures[f"{len(samples)} random samples, stored landmarks drawn"] = png.tobytes() if ok else b""
    intro = f"`r3fa shards inspect {shard_dir} --sheet sheet.png` writes a larger sheet as a file.\n"
    if not samples:
        intro = "The set has no samples.\n"
    return publish_figures(key, f"Shard set {shard_dir}", figures, intro=intro)
