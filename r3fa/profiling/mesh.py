"""The face mesh that face profiling rotates: the 64x64-grid 3DMM restricted to the trimmed face.

The grid model (`r3fa.morphable.load_model("grid4096")`) is triangulated two triangles per grid cell; grid
row = left-right position, grid column = height (DESIGN §2). It extends past the face (ears, neck), so the
face region is the part inside `face_contour_line` of `Model_face_contour_trimed.mat` (the outline of the
trimmed BFM face used by the reference method, 1-based dense-mesh vertex ids), mapped to the nearest grid
points. Within it, each grid column is a horizontal iso-line of the face surface: landmark marching
(`r3fa.profiling.contour`) walks along them. The 68-point model gives the labels' landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy.io import loadmat
from scipy.spatial import cKDTree

from r3fa.morphable import GRID_SIDE, MorphableModel, load_model, posed_vertices_from
from r3fa.paths import data_root

CONTOUR_FILE = "face_profiling/Model_face_contour_trimed.mat"


@dataclass(frozen=True)
class FaceMesh:
    """The rotatable face: the grid model, which grid vertices are face, its triangles and iso-lines."""

    grid: MorphableModel  # 4096 vertices, 40 shape + 10 (derived) expression bases
    landmarks: MorphableModel  # the 68-point model (labels)
    face_mask: np.ndarray  # (4096,) bool: vertex inside the trimmed face outline
    triangles: np.ndarray  # (T, 3) int32 grid triangles with all three vertices on the face
    isolines: np.ndarray  # (L, 64) int: per grid column (top to bottom) its face vertex ids, -1 padded
    grid64: tuple[np.ndarray, np.ndarray, np.ndarray]  # the grid's mean and bases in float64, cast once

    def pose(self, params: np.ndarray) -> np.ndarray:
        """Grid vertices posed by `(62,)` params, `(3, 4096)` float64 (`r3fa.morphable.posed_vertices`
        without casting the bases on every call)."""
        return posed_vertices_from(*self.grid64, np.asarray(params, np.float64))


def _grid_face_mask(grid: MorphableModel, dense: MorphableModel) -> np.ndarray:
    """Grid vertices inside the trimmed face outline, filled in grid (row, column) index space."""
    line = loadmat(data_root() / CONTOUR_FILE)["face_contour_line"].reshape(-1).astype(np.int64) - 1
    outline_xyz = dense.mean.reshape(-1, 3)[line]
    _, nearest = cKDTree(grid.mean.reshape(-1, 3)).query(outline_xyz)
    polygon = np.stack([nearest // GRID_SIDE, nearest % GRID_SIDE], axis=1).astype(np.int32)  # (row, col)
    canvas = np.zeros((GRID_SIDE, GRID_SIDE), np.uint8)  # indexed [col, row]
    cv2.fillPoly(canvas, [polygon], 1)
    cv2.polylines(canvas, [polygon], True, 1)
    return canvas.T.reshape(-1).astype(bool)  # vertex id = row * 64 + col


@lru_cache(maxsize=1)
def load_face_mesh() -> FaceMesh:
    """The face mesh (cached per process)."""
    grid = load_model("grid4096")
    mask = _grid_face_mask(grid, load_model("dense_mean"))
    triangles = grid.triangles[mask[grid.triangles].all(axis=1)].astype(np.int32)
    ids = np.arange(GRID_SIDE * GRID_SIDE).reshape(GRID_SIDE, GRID_SIDE)  # [row, col]
    columns = ids.T  # one row per grid column = one horizontal iso-line
    on_face = mask[columns]
    isolines = np.where(on_face, columns, -1)[on_face.sum(axis=1) >= 2]
    grid64 = tuple(a.astype(np.float64) for a in (grid.mean, grid.shape_basis, grid.exp_basis))
    return FaceMesh(grid, load_model("bfm68"), mask, triangles, isolines, grid64)
