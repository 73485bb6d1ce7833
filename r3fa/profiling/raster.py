"""A vectorised triangle rasteriser with a z-buffer (numpy only, no per-pixel or per-triangle Python loop).

Barycentric coordinates and depth are affine functions of the pixel position, so each triangle gets one
plane per quantity: `[lambda_b, lambda_c, z] = C @ [x, y, 1]` (`lambda_a = 1 - lambda_b - lambda_c`).
Candidate pixels are generated per triangle *row*: on row y each `lambda_i(x, y) >= -eps` is a half-line in
x, so the three of them cut the row to one span `[x_l, x_r]`; the span, widened by one pixel each side for
rounding and clipped to the triangle's bounding box, is expanded into pixels (`np.repeat` over the span
lengths). Only pixels near the triangle are tested, not its whole bounding box (most of a large or thin
triangle's box lies outside it). The test itself is exact: a candidate is inside when its three barycentric
coordinates, evaluated in float32, are `>= -eps`. The z-buffer is one scatter-max (`np.maximum.at`) of a
(layer, depth) key per pixel; the candidates equal to their pixel's maximum win (ties, as on shared edges,
resolve to either triangle). Pixel centres are at integer coordinates (the `cv2.warpAffine`/`cv2.remap`
convention). Larger z is closer to the camera, as in the 3DDFA image frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INSIDE_EPS = 1e-5  # shared edges are covered by both neighbours, so no cracks between triangles
_LAYER_STEP = 1e9  # layer weight in the z-buffer key: larger than any depth range
_SPAN_MIN_WIDTH = 4  # box rows at least this wide (in pixels, minus one) are cut to the triangle's span


@dataclass(frozen=True)
class Raster:
    """Per-pixel result of rasterising a mesh into an `(H, W)` image."""

    triangle: np.ndarray  # (H, W) int32 index of the visible triangle, -1 where none
    bary: np.ndarray  # (H, W, 3) float32 barycentric coordinates of the pixel centre in that triangle
    depth: np.ndarray  # (H, W) float32 interpolated z, -inf where none

    @property
    def covered(self) -> np.ndarray:
        return self.triangle >= 0

    def interpolate(self, values: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """Per-vertex `values` `(N, C)` interpolated at every covered pixel -> `(H, W, C)` float64 (0
        elsewhere): `sum_k bary_k values[corner_k]` over the corners of the pixel's triangle."""
        height, width = self.triangle.shape
        triangle = self.triangle.reshape(-1)
        pixel = np.flatnonzero(triangle >= 0)
        corner_ids = np.ascontiguousarray(np.asarray(triangles, np.intp).T)  # (3, T)
        corners = np.take(corner_ids, np.take(triangle, pixel), axis=1)  # (3, P)
        bary = np.take(self.bary.reshape(-1, 3), pixel, axis=0).T.astype(np.float64)  # (3, P)
        values = np.asarray(values, np.float64)
        out = np.zeros((values.shape[1], height * width))
        for channel, plane in enumerate(out):
            weighted = bary * np.take(values[:, channel], corners)  # (3, P)
            plane[pixel] = weighted[0] + weighted[1] + weighted[2]
        return np.ascontiguousarray(out.T).reshape(height, width, -1)


@dataclass(frozen=True)
class _Planes:
    """Every triangle's three planes and its bounding box, clipped to the image (no rows: covers no pixel)."""

    coef: np.ndarray  # (3, 3, T) float64: [lambda_b, lambda_c, z] x [d/dx, d/dy, constant]
    x0: np.ndarray  # (T,) first and last pixel column and row of the box, clipped to the image
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray


def _planes(xy: np.ndarray, z: np.ndarray, triangles: np.ndarray, height: int, width: int) -> _Planes:
    """Per triangle the affine planes of `lambda_b`, `lambda_c` and `z` over the image plane.

    With corners a, b, c, e1 = b - a, e2 = c - a and det = e1 x e2, the barycentric coordinates of p are
    lambda_b = ((p - a) x e2) / det and lambda_c = (e1 x (p - a)) / det, and z = z_a + lambda_b (z_b - z_a)
    + lambda_c (z_c - z_a). Degenerate triangles (det ~ 0) and those whose box misses the image get no rows.
    """
    corners = np.ascontiguousarray(np.asarray(triangles, np.intp).T)  # (3, T)
    xy = np.asarray(xy, np.float64)
    ax, bx, cx = np.take(xy[:, 0], corners)
    ay, by, cy = np.take(xy[:, 1], corners)
    e1x, e1y, e2x, e2y = bx - ax, by - ay, cx - ax, cy - ay
    det = e1x * e2y - e1y * e2x
    usable = np.abs(det) > 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(usable, det, 1.0)
    lb_x, lb_y = e2y * inv, -e2x * inv
    lc_x, lc_y = -e1y * inv, e1x * inv
    za, zb, zc = np.take(np.asarray(z, np.float64), corners)
    dzb, dzc = zb - za, zc - za
    z_x, z_y = lb_x * dzb + lc_x * dzc, lb_y * dzb + lc_y * dzc
    coef = np.array(
        [
            [lb_x, lb_y, -(lb_x * ax + lb_y * ay)],
            [lc_x, lc_y, -(lc_x * ax + lc_y * ay)],
            [z_x, z_y, za - (z_x * ax + z_y * ay)],
        ]
    )
    x0 = np.maximum(np.ceil(np.minimum(np.minimum(ax, bx), cx)), 0).astype(np.int64)
    x1 = np.minimum(np.floor(np.maximum(np.maximum(ax, bx), cx)), width - 1).astype(np.int64)
    y0 = np.maximum(np.ceil(np.minimum(np.minimum(ay, by), cy)), 0).astype(np.int64)
    y1 = np.minimum(np.floor(np.maximum(np.maximum(ay, by), cy)), height - 1).astype(np.int64)
    y1 = np.where(usable & (x1 >= x0), y1, y0 - 1)  # no rows: degenerate, or the box misses the image
    return _Planes(coef, x0, x1, y0, y1)


def _row_spans(planes: _Planes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One x-span per (triangle, row of its box): `(R,)` triangle, row, first and last column.

    On row y, `lambda(x) = g x + h` with `h = g_y y + g_0`; `lambda >= -eps` is `x >= (-eps - h) / g` for
    g > 0 and `x <= ...` for g < 0 (no bound for g = 0). The span is the intersection for lambda_a,
    lambda_b, lambda_c, widened by one pixel each side (the test on the candidates decides) and clipped to
    the box; it may be empty (last < first). Rows narrower than `_SPAN_MIN_WIDTH` keep the whole box row
    (cutting them saves less than it costs). Rows are ordered by triangle, then top to bottom.
    """
    heights = np.maximum(planes.y1 - planes.y0 + 1, 0)
    tri = np.repeat(np.arange(len(heights)), heights)
    y = np.arange(len(tri)) - np.repeat(np.cumsum(heights) - heights - planes.y0, heights)
    first, last = np.take(planes.x0, tri), np.take(planes.x1, tri)
    wide = np.flatnonzero(last - first >= _SPAN_MIN_WIDTH)
    wide_tri, wide_y = np.take(tri, wide), np.take(y, wide).astype(np.float64)
    bx, by, b0 = np.take(planes.coef[0], wide_tri, axis=1)
    cx, cy, c0 = np.take(planes.coef[1], wide_tri, axis=1)
    lower, upper = np.take(first, wide).astype(np.float64), np.take(last, wide).astype(np.float64)
    slopes = (bx, cx, -bx - cx)
    offsets = (by * wide_y + b0, cy * wide_y + c0, 1.0 - (by + cy) * wide_y - b0 - c0)
    with np.errstate(divide="ignore", invalid="ignore"):
        for g, h in zip(slopes, offsets):
            bound = (-_INSIDE_EPS - h) / g
            lower = np.where(g > 0, np.maximum(lower, np.ceil(bound) - 1), lower)
            upper = np.where(g < 0, np.minimum(upper, np.floor(bound) + 1), upper)
    first[wide], last[wide] = lower, upper
    return tri, y, first, last


def _candidates(planes: _Planes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pixels `(M,)`: triangle, x, y; by triangle, then row-major."""
    row_tri, row_y, first, last = _row_spans(planes)
    lengths = np.maximum(last - first + 1, 0)
    tri = np.repeat(row_tri, lengths)
    x = np.arange(len(tri)) - np.repeat(np.cumsum(lengths) - lengths - first, lengths)
    return tri, x, np.repeat(row_y, lengths)


def _plane_at(coef: np.ndarray, tri: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """One float32 plane `coef` `(3, T)` of triangles `tri` evaluated at pixels (px, py)."""
    gx, gy, g0 = np.take(coef, tri, axis=1)
    return gx * px + gy * py + g0


def rasterize(
    xy: np.ndarray, z: np.ndarray, triangles: np.ndarray, height: int, width: int, layer: np.ndarray | None = None
) -> Raster:
    """Rasterise triangles with a z-buffer.

    Args:
        xy: `(N, 2)` vertex pixel positions (x right, y down).
        z: `(N,)` vertex depths, larger = closer.
        triangles: `(T, 3)` vertex ids.
        height: output rows.
        width: output columns.
        layer: optional `(T,)` ints; a triangle of a higher layer hides any of a lower one whatever the
            depths (e.g. face over background), depth decides within a layer.

    Returns:
        The `Raster` with the closest triangle per pixel.
    """
    planes = _planes(xy, z, triangles, height, width)
    coef = planes.coef.astype(np.float32)
    tri, x, y = _candidates(planes)
    px, py = x.astype(np.float32), y.astype(np.float32)
    lb, lc = _plane_at(coef[0], tri, px, py), _plane_at(coef[1], tri, px, py)
    la = 1.0 - lb - lc
    inside = np.flatnonzero((la >= -_INSIDE_EPS) & (lb >= -_INSIDE_EPS) & (lc >= -_INSIDE_EPS))
    tri, pixel = np.take(tri, inside), np.take(y, inside) * width + np.take(x, inside)
    depth = _plane_at(coef[2], tri, np.take(px, inside), np.take(py, inside)).astype(np.float64)
    key = depth if layer is None else np.take(np.asarray(layer), tri) * _LAYER_STEP + depth
    best = np.full(height * width, -np.inf)
    np.maximum.at(best, pixel, key)
    win = np.flatnonzero(key == np.take(best, pixel))
    win_candidate, win_pixel = np.take(inside, win), np.take(pixel, win)
    triangle = np.full(height * width, -1, np.int32)
    bary = np.zeros((height * width, 3), np.float32)
    zbuf = np.full(height * width, -np.inf, np.float32)
    triangle[win_pixel] = np.take(tri, win)
    for k, coordinate in enumerate((la, lb, lc)):
        bary[:, k][win_pixel] = np.take(coordinate, win_candidate)
    zbuf[win_pixel] = np.take(depth, win)
    return Raster(triangle.reshape(height, width), bary.reshape(height, width, 3), zbuf.reshape(height, width))
