"""Image meshing of the background around the face, anchor depth, and anchor re-placement after rotation.

The background must move with the face near its outline and stay put at the image border, without tearing.
So it is triangulated (Delaunay) over the face outline's vertices, rings of anchors scaled out from the
outline about its centroid, and anchors on the border of the working region. Anchors get a depth from the
face z-buffer where they land on the face, otherwise from a least-squares solve that keeps depth differences
along mesh edges small (a harmonic fill from the outline's known depth). After rotation the outline's
vertices move with the face, the border stays, and the ring anchors are placed by least squares so that every
background edge keeps its original 2D vector as closely as possible.

Vertex ids of the background triangles index the combined vertex list [face mesh vertices | anchors].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lu_factor, lu_solve
from scipy.spatial import Delaunay

RING_SCALES = (1.15, 1.4, 1.8)
BORDER_ANCHORS_PER_SIDE = 8


@dataclass(frozen=True)
class BackgroundMesh:
    """Anchors and the background triangles joining them to the face outline."""

    anchor_xy: np.ndarray  # (M, 2) source image positions
    on_border: np.ndarray  # (M,) bool: border anchors stay where they are
    triangles: np.ndarray  # (B, 3) ids into [face vertices | anchors]
    interior: np.ndarray  # (B,) bool: outline-only triangle inside the outline (only fills gaps)
    num_face_vertices: int

    def edges(self) -> np.ndarray:
        """`(E, 2)` unique undirected edges of the background triangles (combined ids)."""
        first = self.triangles.reshape(-1).astype(np.int64)
        second = np.roll(self.triangles, -1, axis=1).reshape(-1).astype(np.int64)
        low, high = np.minimum(first, second), np.maximum(first, second)
        span = int(high.max()) + 1 if high.size else 1
        keys = np.unique(low * span + high)  # sorted like the (low, high) rows
        return np.stack([keys // span, keys % span], axis=1)


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of `(P, 2)` points against a closed `(K, 2)` polygon -> `(P,)` bool."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    px, py = points[:, 0:1], points[:, 1:2]
    straddles = (a[None, :, 1] > py) != (b[None, :, 1] > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (b[None, :, 0] - a[None, :, 0]) / (b[None, :, 1] - a[None, :, 1])
        x_cross = a[None, :, 0] + (py - a[None, :, 1]) * slope
    return (straddles & (px < x_cross)).sum(axis=1) % 2 == 1


def _border_points(region: np.ndarray, per_side: int) -> np.ndarray:
    x0, y0, x1, y1 = region
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)
    top = np.stack([x0 + t * (x1 - x0), np.full_like(t, y0)], 1)
    right = np.stack([np.full_like(t, x1), y0 + t * (y1 - y0)], 1)
    bottom = np.stack([x1 - t * (x1 - x0), np.full_like(t, y1)], 1)
    left = np.stack([np.full_like(t, x0), y1 - t * (y1 - y0)], 1)
    return np.concatenate([top, right, bottom, left])


def mesh_background(face_xy: np.ndarray, contour: np.ndarray, region: np.ndarray) -> BackgroundMesh:
    """Triangulate the background between the face outline and the border of `region`.

    Args:
        face_xy: `(N, 2)` projected face mesh vertices (image pixels).
        contour: `(K,)` outline vertex ids in polygon order (`march_contour`).
        region: `[x0, y0, x1, y1]` of the working region; its border carries fixed anchors.

    Returns:
        The background mesh. Triangles of outline vertices only whose centroid and edge midpoints lie
        inside the outline are marked `interior`: the face covers them, they only fill what it leaves.
    """
    outline = face_xy[contour]
    centre = outline.mean(axis=0)
    rings = np.concatenate([centre + s * (outline[::2] - centre) for s in RING_SCALES])
    rings = rings[~inside_polygon(rings, outline)]
    x0, y0, x1, y1 = region
    rings = rings[(rings[:, 0] > x0) & (rings[:, 0] < x1) & (rings[:, 1] > y0) & (rings[:, 1] < y1)]
    border = _border_points(region, BORDER_ANCHORS_PER_SIDE)
    anchors = np.concatenate([rings, border])
    points = np.concatenate([outline, anchors])
    simplices = Delaunay(points).simplices
    # Delaunay is unconstrained, so the outline's chords need not match the face's edge: rather than drop
    # the triangles inside the outline, rank them below everything else (no gap can open)
    # (only triangles of outline vertices alone can be interior: only they are probed)
    outline_only = np.flatnonzero((simplices < len(outline)).all(axis=1))
    corners = points[simplices[outline_only]]  # (T', 3, 2)
    probes = np.concatenate([corners.mean(axis=1, keepdims=True), (corners + np.roll(corners, 1, axis=1)) / 2], 1)
    interior = np.zeros(len(simplices), bool)
    interior[outline_only] = inside_polygon(probes.reshape(-1, 2), outline).reshape(-1, 4).all(axis=1)
    n_face = len(face_xy)
    ids = np.concatenate([contour, n_face + np.arange(len(anchors))])
    on_border = np.r_[np.zeros(len(rings), bool), np.ones(len(border), bool)]
    return BackgroundMesh(anchors, on_border, ids[simplices].astype(np.int32), interior, n_face)


class EdgeLeastSquares:
    """Least squares over vertex values `v` so that `v[i] - v[j]` matches a target on every edge `(i, j)`,
    with some vertices fixed.

    With D the `(E, F)` signed incidence matrix of the edges restricted to the free vertices (+1 at i,
    -1 at j), the free values solve the normal equations `(D^T D + 1e-9 I) v_free = D^T (t - D_fixed
    v_fixed)`; the tiny ridge only pins free vertices on no edge. The normal matrix depends only on the edges
    and on which vertices are fixed, not on the values or the targets, so it is LU-factorised once here and
    every `solve` is two triangular solves: the views of one source share one factorisation.
    """

    def __init__(self, edges: np.ndarray, known: np.ndarray) -> None:
        """
        Args:
            edges: `(E, 2)` vertex ids.
            known: `(V,)` bool, vertices whose values are fixed.
        """
        self.edges = edges
        self.known = np.asarray(known, bool)
        self.free = np.flatnonzero(~self.known)
        column = np.full(len(known), -1)
        column[self.free] = np.arange(self.free.size)
        i, j = column[edges[:, 0]], column[edges[:, 1]]  # -1 where the end is fixed
        rows = np.arange(len(edges))
        self._design = np.zeros((len(edges), self.free.size))
        self._design[rows[i >= 0], i[i >= 0]] += 1.0
        self._design[rows[j >= 0], j[j >= 0]] -= 1.0
        # D^T D is the graph Laplacian of the free vertices: degree on the diagonal, -1 per free-free edge
        normal = np.diag(np.bincount(np.r_[i[i >= 0], j[j >= 0]], minlength=self.free.size).astype(np.float64))
        both = (i >= 0) & (j >= 0)
        np.add.at(normal, (i[both], j[both]), -1.0)
        np.add.at(normal, (j[both], i[both]), -1.0)
        normal += 1e-9 * np.eye(self.free.size)
        self._lu = lu_factor(normal) if self.free.size else None

    def solve(self, values: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The least-squares values.

        Args:
            values: `(V, C)` fixed values where `known` (others ignored).
            targets: `(E, C)` wanted differences `v[i] - v[j]`.

        Returns:
            `(V, C)` values: the fixed ones, and the least-squares solution for the others.
        """
        out = np.array(values, np.float64)
        if self._lu is None:
            return out
        first, second = self.edges[:, 0], self.edges[:, 1]
        rhs = np.array(targets, np.float64) - np.where(self.known[first, None], out[first], 0.0)
        rhs += np.where(self.known[second, None], out[second], 0.0)
        out[self.free] = lu_solve(self._lu, self._design.T @ rhs)
        return out
