"""`r3fa labels`: check the 62-d labels derived from 300W-LP-format annotations before building on them.

Thin wrapper over `r3fa.audit`: runs the folder audit with a progress bar and prints its report.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.progress import progress_callback
from r3fa.atomic import write_text_atomic
from r3fa.audit import AuditReport, audit_folder
from r3fa.errors import UserError
from r3fa.io import MAX_IMAGE_PIXELS

app = typer.Typer(
    help="Labels from 300W-LP-format annotations (.jpg + .mat pairs): audit how well they reproduce the landmarks.",
    epilog="Example:\n\nr3fa labels audit ../shared/data/aflw2000_3d --format json",
    no_args_is_help=True,
)


class ReportFormat(str, Enum):
    json = "json"
    table = "table"


AUDIT_HELP = "\n\n".join(
    [
        "Label every .jpg/.mat pair under ROOT and report label NME, |yaw| bins and rejected files.",
        "inputs: every image or .mat found (= count + rejected). "
        "count: the number of pairs read and labelled successfully. "
        "label_nme (median, p95, max; percent): the label's 68 landmarks against the annotation's own "
        "(pt3d_68, else a 68-point pt2d, else 300W-LP's landmarks/<subset>/<name>_pts.mat), "
        "normalised by sqrt(w*h) of their box. "
        "yaw_bins: |yaw| of the annotation's Pose_Para, 0-30, 30-60, 60-90 (|yaw| > 90 included). "
        "rejected: every unusable file (truncated .mat, missing field, NaN, missing or corrupt image, an image "
        "larger than --max-image-pixels (refused from its header), unpaired file, two files of one name, "
        "no 68 landmarks, a label the maths cannot handle) with its reason, stage and exception class.",
        "Examples:",
        "r3fa labels audit ../shared/data/aflw2000_3d --format json",
        "r3fa labels audit /data/300W_LP --refit --out audit.json",
    ]
)


@app.command(help=AUDIT_HELP)
def audit(
    root: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="Folder of 300W-LP-format .jpg + .mat pairs (searched recursively)."
    ),
    format: ReportFormat = typer.Option(
        ReportFormat.table, "--format", "-f", help="Report on stdout as json or a table."
    ),
    refit: bool = typer.Option(False, "--refit", help="Refit the 40 shape + 10 expression coefficients (pose kept)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the JSON report to this file."),
    max_image_pixels: int = typer.Option(
        MAX_IMAGE_PIXELS, "--max-image-pixels", min=1, help="Reject larger images from their header, without decoding."
    ),
) -> None:
    """Audit the labels of every .jpg/.mat pair under ROOT (see AUDIT_HELP)."""
    if out is not None and out.is_dir():
        raise UserError(f"--out {out} is a folder; give the path of the JSON report file")
    with progress_callback("audit", unit="images") as progress:
        report = audit_folder(root, refit=refit, progress=progress, max_image_pixels=max_image_pixels)
    data = report.to_dict()
    if out is not None:
        try:
            write_text_atomic(out, json.dumps(data, indent=2) + "\n")
        except OSError as err:
            raise UserError(f"cannot write the report to {out}: {err.strerror or err}") from None
    if format is ReportFormat.json:
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_tables(report, Console())


def _print_tables(report: AuditReport, console: Console) -> None:
    summary = Table(title="Label audit", show_header=False)
    summary.add_column("quantity")
    summary.add_column("value", justify="right")
    summary.add_row("inputs", str(report.inputs))
    summary.add_row("pairs read", str(report.count))
    for name, value in report.nme_summary().items():
        summary.add_row(f"label NME {name} (%)", "-" if value is None else f"{value:.3f}")
    for name, value in report.yaw_bins().items():
        summary.add_row(f"|yaw| {name}", str(value))
    summary.add_row("rejected", str(len(report.rejected)))
    console.print(summary)
    if report.rejected:
        rejected = Table(title="Rejected files")
        rejected.add_column("path", overflow="fold")
        rejected.add_column("reason")
        rejected.add_column("error")
        for rejection in report.rejected:
            rejected.add_row(rejection.path, rejection.reason, rejection.error)
        console.print(rejected)
