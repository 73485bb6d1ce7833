"""Figures in the Prefect UI: PNG files published as markdown artifacts with the image embedded.

The flows write their figures (CED, best/worst sheet, shard contact sheet, training curves) to the run's
folder on the worker's disk, which a person at the UI cannot open. A markdown artifact whose image is a
`data:` URI carries the picture itself to the server, so the flow run's Artifacts tab shows it, with the
file's path underneath for whoever wants the original. A large figure is re-encoded as a JPEG that fits
`MAX_EMBEDDED_BYTES`, so one artifact never bloats the server's database; a missing or unreadable figure
is named in the artifact instead of stopping the flow (the figure is a by-product, the numbers are not).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from uuid import UUID

from prefect.artifacts import create_markdown_artifact

MAX_EMBEDDED_BYTES = 400_000  # per figure, before base64
JPEG_QUALITIES = (90, 75, 60)
MAX_EMBEDDED_SIDE = 1600  # pixels; larger images are scaled down before JPEG encoding


def _jpeg(path: Path) -> bytes | None:
    """`path` as a JPEG of at most `MAX_EMBEDDED_BYTES` (scaled to `MAX_EMBEDDED_SIDE`), None if unreadable."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    scale = min(1.0, MAX_EMBEDDED_SIDE / max(image.shape[:2]))
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for quality in JPEG_QUALITIES:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(data) <= MAX_EMBEDDED_BYTES:
            return data.tobytes()
    return None


def data_uri(path: str | Path) -> str | None:
    """A `data:` URI of the image at `path`: the PNG itself when small enough, else a JPEG that is; None when
    the file is missing or no encoding fits."""
    path = Path(path)
    if not path.is_file():
        return None
    raw = path.read_bytes()
    if len(raw) <= MAX_EMBEDDED_BYTES and raw.startswith(b"\x89PNG"):
        return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")
    jpeg = _jpeg(path)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def figures_markdown(title: str, figures: Mapping[str, str | Path]) -> str:
    """Markdown with a heading per figure, the image embedded and its path below it."""
    parts = [f"# {title}\n"]
    for name, path in figures.items():
        uri = data_uri(path)
        image = f"![{name}]({uri})" if uri else f"*(figure not available: `{path}` is missing or unreadable)*"
        parts.append(f"## {name}\n\n{image}\n\n`{path}`\n")
    return "\n".join(parts)


def publish_figures(key: str, title: str, figures: Mapping[str, str | Path], description: str | None = None) -> UUID:
    """Publish `figures` (name -> PNG path) as one markdown artifact of the current flow or task run.

    Args:
        key: the artifact key (lowercase letters, digits and dashes).
        title: the artifact's heading.
        figures: figure name -> image file, in the order they are shown.
        description: the artifact's description in the UI.

    Returns:
        The artifact's id.
    """
    return create_markdown_artifact(
        key=key, markdown=figures_markdown(title, figures), description=description or title
    )
