"""Wavefront OBJ meshes: write a posed mesh (`r3fa predict --mesh`) and read one back.

Only vertices (`v x y z`) and triangular faces (`f i j k`, 1-based) are written: any viewer (MeshLab, Blender)
opens them. Vertices are `(3, N)` as everywhere in r3fa; triangles `(T, 3)` 0-based.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from r3fa.atomic import write_text_atomic


def write_obj(path: str | Path, vertices: np.ndarray, triangles: np.ndarray) -> Path:
    """Write an OBJ atomically (temporary file, then rename).

    Args:
        path: output file.
        vertices: `(3, N)` coordinates.
        triangles: `(T, 3)` 0-based vertex indices.

    Returns:
        The path written.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(triangles, np.int64)
    if v.ndim != 2 or v.shape[0] != 3:
        raise ValueError(f"vertices must be (3, N), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= v.shape[1])):
        raise ValueError(f"triangles must be (T, 3) indices below {v.shape[1]}, got shape {f.shape}")
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v.T] + [f"f {a} {b} {c}" for a, b, c in f + 1]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices `(3, N)` and 0-based triangles `(T, 3)` of an OBJ (other records ignored; `f` entries may be
    `i/t/n`)."""
    verts, faces = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(p) for p in parts[1:4]])
        elif parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:4]])
    return np.array(verts, np.float64).reshape(-1, 3).T, np.array(faces, np.int64).reshape(-1, 3)
