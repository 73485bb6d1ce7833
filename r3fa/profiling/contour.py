"""Landmark marching: the face's outline in the image, found along the iso-lines of the face mesh.

On a turned face the visible outline is not a fixed set of vertices: the far cheek's silhouette slides
over the surface as the yaw grows. Landmark marching (Zhu et al.) walks each horizontal iso-line of the
face and takes its outermost projected vertex on either side; the top and bottom iso-lines close the loop.
"""

from __future__ import annotations

import numpy as np


def march_contour(xy: np.ndarray, isolines: np.ndarray, max_points: int = 64) -> np.ndarray:
    """Vertex ids of the face outline, in order around a closed polygon.

    Args:
        xy: `(N, 2)` projected positions of all mesh vertices (image pixels).
        isolines: `(L, W)` face vertex ids per horizontal iso-line, top to bottom, -1 padded
            (`FaceMesh.isolines`).
        max_points: the outline is thinned evenly to at most this many vertices.

    Returns:
        `(K,)` vertex ids: left side top to bottom, the bottom line, right side bottom to top, the top line.
    """
    valid = isolines >= 0
    x = xy[np.maximum(isolines, 0), 0]
    rows = np.arange(len(isolines))
    left = isolines[rows, np.argmin(np.where(valid, x, np.inf), axis=1)]
    right = isolines[rows, np.argmax(np.where(valid, x, -np.inf), axis=1)]
    top, bottom = isolines[0][valid[0]], isolines[-1][valid[-1]]
    bottom = bottom[np.argsort(xy[bottom, 0])]
    top = top[np.argsort(-xy[top, 0])]
    loop = np.concatenate([left, bottom, right[::-1], top])
    _, first = np.unique(loop, return_index=True)
    loop = loop[np.sort(first)]
    step = int(np.ceil(len(loop) / max_points))
    return loop[::step]
