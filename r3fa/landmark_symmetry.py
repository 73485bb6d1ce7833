"""Left-right symmetry of the iBUG 68-point layout and of the 3DMM coefficients.

Mirroring a face image swaps its left and right landmarks: `IBUG68_FLIP[i]` is the point that lands on
point i's role after a horizontal flip (jaw 0..16 reversed, brows 17..21 <-> 26..22, nostrils 31..35
reversed, eyes 36..41 <-> 45..42,47,46, lips reversed about the vertical axis; the midline points 27..30,
33, 51, 57, 62, 66 stay).

The BFM's PCA components are not individually symmetric (DESIGN §2), so a mirrored face's coefficients
are not sign flips: `mirror_coefficients` solves for them by least squares against the mirrored 3D shape
at the 68 landmarks of the `bfm68` model (x -> -x in the model frame, points permuted with
`IBUG68_FLIP`; all three coordinates, 204 equations for 50 coefficients and a translation).
"""

from __future__ import annotations

import numpy as np

from r3fa.morphable import MorphableModel
from r3fa.params import EXP_DIM, SHAPE_DIM

_JAW = list(range(16, -1, -1))
_BROWS = [26, 25, 24, 23, 22, 21, 20, 19, 18, 17]
_NOSE = [27, 28, 29, 30, 35, 34, 33, 32, 31]
_EYES = [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
_OUTER_LIPS = [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
_INNER_LIPS = [64, 63, 62, 61, 60, 67, 66, 65]
IBUG68_FLIP: np.ndarray = np.array(_JAW + _BROWS + _NOSE + _EYES + _OUTER_LIPS + _INNER_LIPS, dtype=np.int64)

_MIRROR_X = np.diag([-1.0, 1.0, 1.0])
_SOLVERS: dict[int, tuple[MorphableModel, np.ndarray, np.ndarray]] = {}  # id(model) -> (model, basis, pinv)


def _solver(model: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    """The model's (basis, pseudo-inverse of the least-squares design), computed once per model object (the
    model is kept with them, so its id is not reused while cached; models are few and long-lived)."""
    cached = _SOLVERS.get(id(model))
    if cached is None or cached[0] is not model:
        basis = np.concatenate([model.shape_basis, model.exp_basis], axis=1).astype(np.float64)
        design = np.concatenate([basis, np.tile(np.eye(3), (model.num_vertices, 1))], axis=1)
        cached = _SOLVERS[id(model)] = (model, basis, np.linalg.pinv(design))
    return cached[1], cached[2]


def mirror_coefficients(
    shape: np.ndarray, exp: np.ndarray, model: MorphableModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients of the mirror image of a face, by least squares at the model's 68 landmarks.

    Args:
        shape: (..., 40) shape coefficients (a batch of faces is solved in one least-squares call).
        exp: (..., 10) expression coefficients.
        model: a 68-landmark model in iBUG order (`bfm68`).

    Returns:
        (shape', exp', offset): `mean + W [shape'; exp'] + offset` is the best fit of
        `diag(-1, 1, 1) V[:, IBUG68_FLIP]`, where V is the face of (shape, exp); `offset` (..., 3) absorbs the
        model mean's small asymmetry about x = 0 and belongs to the pose's translation.
    """
    basis, pinv = _solver(model)
    coeffs = np.concatenate([np.asarray(shape, np.float64), np.asarray(exp, np.float64)], axis=-1)
    mean = model.mean.astype(np.float64)
    # matrix @ vector per face, not one matrix product of the batch: a face's coefficients are then the same
    # bits whichever faces are solved with it (a BLAS matrix product's rounding depends on the batch size)
    face = (mean + (basis @ coeffs[..., None])[..., 0]).reshape(*coeffs.shape[:-1], -1, 3)  # (..., 68, 3)
    target = (face[..., IBUG68_FLIP, :] @ _MIRROR_X).reshape(*coeffs.shape[:-1], mean.size)  # x,y,z interleaved
    solution = (pinv @ (target - mean)[..., None])[..., 0]
    return solution[..., :SHAPE_DIM], solution[..., SHAPE_DIM : SHAPE_DIM + EXP_DIM], solution[..., SHAPE_DIM + EXP_DIM :]
