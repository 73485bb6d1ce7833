"""A vectorised triangle rasteriser with a z-buffer (numpy only, no per-pixel or per-triangle Python loop).

Every triangle is expanded into the integer pixel positions of its bounding box (`np.repeat` over the
box sizes), barycentric coordinates and depth (one affine plane per triangle) are computed for all
candidates at once, the ones inside are kept, and the z-buffer is resolved with one scatter-max
(`np.maximum.at`) of a (layer, depth) key per pixel; the candidates equal to their pixel's maximum win.
Pixel centres are at integer coordinates (the `cv2.warpAffine`/`cv2.remap` convention). Larger z is closer
to the camera, as in the 3DDFA image frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INSIDE_EPS = 1e-5  # shared edges are covered by both neighbours, so no cracks between triangles
_LAYER_STEP = 1e9  # layer weight in the z-buffer key: larger than any depth range



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
        """Per-vertex `values` `(N, C)` interpolated at every covered pixel -> `(H, W, C)` (0 elsewhere)."""
        tri = np.maximum(self.triangle, 0)
        corner_values = values[triangles[tri]]  # (H, W, 3, C)
        out = np.einsum("hwk,hwkc->hwc", self.bary, corner_values)
        out[~self.covered] = 0
        return out


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
    corners = np.asarray(xy, np.float64)[triangles]  # (T, 3, 2)
    x0 = np.clip(np.ceil(corners[..., 0].min(1)), 0, width)
    x1 = np.clip(np.floor(corners[..., 0].max(1)), -1, width - 1)
    y0 = np.clip(np.ceil(corners[..., 1].min(1)), 0, height)
    y1 = np.clip(np.floor(corners[..., 1].max(1)), -1, height - 1)
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    box_w = (x1 - x0 + 1).astype(np.int64)
    box_h = (y1 - y0 + 1).astype(np.int64)
    keep = np.flatnonzero((box_w > 0) & (box_h > 0) & (np.abs(det) > 1e-12))
    # barycentric coordinates and depth are affine in (x, y): one (3 x 3) plane per triangle,
    # [lambda_b, lambda_c, z] = coef @ [x, y, 1], evaluated for every candidate pixel at once
    k = keep
    inv = 1.0 / det[k]
    ab, ac = b[k] - a[k], c[k] - a[k]
    lb_xy = np.stack([ac[:, 1], -ac[:, 0]], 1) * inv[:, None]
    lc_xy = np.stack([-ab[:, 1], ab[:, 0]], 1) * inv[:, None]
    zt = np.asarray(z, np.float64)[triangles[k]]
    z_xy = lb_xy * (zt[:, 1:2] - zt[:, 0:1]) + lc_xy * (zt[:, 2:3] - zt[:, 0:1])
    planes = np.stack([lb_xy, lc_xy, z_xy], axis=1)  # (K, 3, 2)
    offsets = -(planes * a[k][:, None, :]).sum(axis=2)
    offsets[:, 2] += zt[:, 0]
    coef = np.concatenate([planes, offsets[:, :, None]], axis=2).astype(np.float32)  # (K, 3, 3)
    counts = box_w[k] * box_h[k]
    local_tri = np.repeat(np.arange(len(k)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    dy, dx = np.divmod(local, box_w[k][local_tri])
    px = (x0[k][local_tri] + dx).astype(np.float32)
    py = (y0[k][local_tri] + dy).astype(np.float32)
    cf = coef[local_tri]  # (M, 3, 3)
    values = cf[:, :, 0] * px[:, None] + cf[:, :, 1] * py[:, None] + cf[:, :, 2]  # (M, 3): lb, lc, z
    lb, lc = values[:, 0], values[:, 1]
    la = 1.0 - lb - lc
    inside = (la >= -_INSIDE_EPS) & (lb >= -_INSIDE_EPS) & (lc >= -_INSIDE_EPS)
    tid = k[local_tri[inside]]
    la, lb, lc, depth = la[inside], lb[inside], lc[inside], values[inside, 2]
    pixel = py[inside].astype(np.int64) * width + px[inside].astype(np.int64)
    depth = depth.astype(np.float64)
    key = depth if layer is None else np.asarray(layer)[tid] * _LAYER_STEP + depth
    best = np.full(height * width, -np.inf)
    np.maximum.at(best, pixel, key)
    last = np.flatnonzero(key == best[pixel])  # ties (shared edges) resolve to either triangle
    triangle = np.full(height * width, -1, np.int32)
    bary = np.zeros((height * width, 3), np.float32)
    zbuf = np.full(height * width, -np.inf, np.float32)
    triangle[pixel[last]] = tid[last]
    bary[pixel[last]] = np.stack([la[last], lb[last], lc[last]], axis=1)
    zbuf[pixel[last]] = depth[last]
    return Raster(triangle.reshape(height, width), bary.reshape(height, width, 3), zbuf.reshape(height, width))
