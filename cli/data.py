"""`r3fa data`: lay out stand-in source trees for tests and benchmarks at the paper's scale.

`r3fa data standin-300wlp --images N --out DIR` writes a 300W-LP-shaped tree made from AFLW2000-3D
(`r3fa.standin.write_standin`: symlinks, mirror images for the `_Flip` folders) that a mix config's `300wlp`
source can point at (`root:` an absolute path). This module only parses options and prints the summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.formats import OutputFormat

app = typer.Typer(
    help="Lay out stand-in source trees (300W-LP-shaped, from AFLW2000-3D).",
    epilog="Example:\n\nr3fa data standin-300wlp --images 1000 --out /tmp/r3fa-standin/300W_LP-1k",
    no_args_is_help=True,
)



@app.command(
    "standin-300wlp",
    epilog="Examples:\n\n"
    "r3fa data standin-300wlp --images 122450 --out /tmp/r3fa-standin/300W_LP-full   # 300W-LP's size\n\n"
    "r3fa data standin-300wlp --images 12245 --out /tmp/r3fa-standin/300W_LP-1of10 --format json\n\n"
    "Then point a mix config's source at it: `sources: [{kind: 300wlp, root: /tmp/r3fa-standin/300W_LP-1of10}]` "
    "(configs/mix/paper-68k.yaml does). Running the same command again changes nothing; another size on the "
    "same folder is refused. Everything in the tree is a symlink; the stand-in is for tests and benchmarks, "
    "never for training (AFLW2000-3D is the benchmark set).",
)
def standin_300wlp(
    images: int = typer.Option(..., "--images", min=1, help="images in the tree, _Flip included (300W-LP: 122450)"),
    out: Path = typer.Option(..., "--out", help="the tree's folder: new, empty, or a stand-in of the same request"),
    seed: int = typer.Option(0, "--seed", min=0, help="fixes each face's AFLW2000-3D image and view count"),
    flips: bool = typer.Option(True, "--flips/--no-flips", help="lay out the _Flip folders (mirror images)"),
    source: Path | None = typer.Option(
        None, "--source", file_okay=False, help="AFLW2000-3D folder (default: $R3FA_DATA/aflw2000_3d)"
    ),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="json or a table"),
) -> None:
    """Lay out a 300W-LP-shaped tree of IMAGES images from AFLW2000-3D (symlinks; mirrored files for flips)."""
    from r3fa.standin import write_standin

    start = time.perf_counter()
    summary = write_standin(out, images, seed=seed, flips=flips, source_root=source)
    report = {**summary.to_dict(), "seconds": round(time.perf_counter() - start, 2)}
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table()
    table.add_column("folder")
    table.add_column("images", justify="right")
    for folder, n in report["folders"].items():
        table.add_row(folder, str(n))
    console = Console()
    console.print(
        f"{report['root']}: {report['images']} images, {report['faces']} faces "
        f"from {report['sources']} AFLW2000-3D images"
    )
    console.print(table)
    done = "unchanged (complete already)" if report["unchanged"] else (
        f"{report['links_made']} links and {report['files_written']} files written"
    )
    console.print(f"{done} in {report['seconds']} s")
