"""Drawing helpers for looking at faces: landmarks on an image and contact sheets of many images.

Every inspection tool (dataset inspector, face-profiling preview, evaluation overlays, `r3fa predict --overlay`)
draws with these two functions, so the overlays look the same everywhere. Images are OpenCV BGR uint8 arrays;
nothing here writes files.
"""

from __future__ import annotations

import cv2
import numpy as np

_SUBPIXEL_BITS = 4  # cv2 fixed-point shift: coordinates drawn with 1/16 pixel precision


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Returns a uint8 3-channel copy of a gray, BGR or BGRA image."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img.copy()
    raise ValueError(f"expected a HxW, HxWx3 or HxWx4 image, got shape {img.shape}")


def draw_landmarks(
    image_bgr: np.ndarray,
    pts: np.ndarray,
    color: tuple[int, int, int] = (0, 255, 0),
    radius: int = 1,
    scale: float = 1.0,
) -> np.ndarray:
    """Draws landmarks as filled dots on a copy of an image.

    Args:
        image_bgr: HxW, HxWx3 or HxWx4 image (uint8, or anything clipped to 0..255).
        pts: (2, N) or (3, N) points in the image's pixel coordinates (x row first; a z row is ignored).
            Float coordinates are drawn with sub-pixel precision; non-finite points are skipped.
        color: BGR colour of the dots.
        radius: dot radius in output pixels.
        scale: upscale the image by this factor before drawing (e.g. 4 for a 120x120 crop), points follow.

    Returns:
        A new HxWx3 uint8 BGR image (the input is not modified).
    """
    points = np.asarray(pts, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] not in (2, 3):
        raise ValueError(f"pts must be (2, N) or (3, N), got shape {points.shape}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    out = _as_bgr(image_bgr)
    if scale != 1.0:
        h, w = out.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        out = cv2.resize(out, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    xy = points[:2] * scale
    factor = 1 << _SUBPIXEL_BITS
    for x, y in xy.T:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        centre = (int(round(x * factor)), int(round(y * factor)))
        cv2.circle(out, centre, int(radius) * factor, color, thickness=-1, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    return out


def _fit_cell(image: np.ndarray, cell: int) -> np.ndarray:
    """Resizes an image to fit a cell x cell square (aspect kept) and pads it with black."""
    img = _as_bgr(image)
    h, w = img.shape[:2]
    f = cell / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((cell, cell, 3), np.uint8)
    y0, x0 = (cell - nh) // 2, (cell - nw) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = img
    return canvas


def contact_sheet(
    images: list[np.ndarray],
    ncols: int,
    captions: list[str] | None = None,
    cell: int | None = None,
) -> np.ndarray:
    """Tiles images into one grid image, optionally with a caption under each.

    Args:
        images: BGR (or gray) images of any sizes; at least one.
        ncols: number of columns (rows follow from the count).
        captions: one short text per image, drawn in a strip below it; None for no captions.
        cell: side of the square each image is fitted into (aspect kept, black padding);
            None uses the largest side among the images.

    Returns:
        The sheet, an HxWx3 uint8 BGR image; unused trailing cells are black.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    side = int(cell) if cell is not None else max(max(np.asarray(im).shape[:2]) for im in images)
    if side < 1:
        raise ValueError(f"cell must be >= 1, got {side}")
    font_scale = max(0.3, min(1.0, side / 400))
    text_h = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)[0][1]
    strip = text_h + 8 if captions is not None else 0
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    sheet = np.zeros((nrows * (side + strip), ncols * side, 3), np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, ncols)
        y0, x0 = r * (side + strip), c * side
        sheet[y0 : y0 + side, x0 : x0 + side] = _fit_cell(image, side)
        if captions is not None:
            text, scale = _fitted_caption(str(captions[k]), side - 6, font_scale)
            org = (x0 + 3, y0 + side + text_h + 3)
            cv2.putText(sheet, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return sheet


_MIN_FONT_SCALE = 0.3  # below this OpenCV's Hershey font is no longer legible


def _fitted_caption(text: str, width: int, scale: float) -> tuple[str, float]:
    """The caption and font scale that fit in `width` pixels, so a caption never runs into the next cell:
    the scale shrinks (down to `_MIN_FONT_SCALE`), then the text is cut and ends in "..."."""
    def text_width(t: str, s: float) -> int:
        return cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, s, 1)[0][0]

    full = text_width(text, scale)
    if full <= width:
        return text, scale
    scale = max(_MIN_FONT_SCALE, scale * width / full)
    while text and text_width(text, scale) > width:
        text = text[:-4] + "..." if len(text) > 3 else ""
    return text, scale
