"""3DMM fitting: a 62-d label (pose, 40 shape, 10 expression coefficients) from 68 2D landmarks of an image.

300W-LP was made by fitting the 3DMM to 300W's 2D landmarks (Zhu et al. 2016); this module does the same for
any 68-point annotation, so that a team can label its own images. The method is the published one (3DDFA's /
face3d's `fit_points`, HPEN's landmark marching), written here from the maths:

- **pose**: an affine camera fitted to the current 3D landmarks by least squares, made a scaled orthographic
  projection by the nearest rotation (SVD), with scale and 2D translation re-solved for that rotation;
- **coefficients**: with the pose fixed, the 40 shape and 10 expression coefficients by one linear least-squares
  solve with a Tikhonov term that pulls them to the prior `N(mean, std^2)` of the 300W-LP labels
  (`r3fa.params.load_whitening("v1")`); the data term is normalised by the landmark box, so the weight does not
  depend on the image size;
- **landmark marching**: a 2D annotation follows the *visible outline* of the jaw, which on a turned face is
  not a fixed vertex of the model. At each iteration, each jaw landmark of the side turned away from the camera
  is re-chosen on its horizontal iso-line of the face surface: the vertex that lies outermost along the face's
  projected left-right axis (the silhouette). Iso-lines are the columns of the 64x64 grid model restricted to
  the trimmed face (`r3fa.profiling.mesh.load_face_mesh`, built from
  `face_profiling/Model_face_contour_trimed.mat`); the chin (landmark 8) and the near side keep their vertices.

Frames: the fit works in a y-up copy of the image frame (x right, y up, z towards the viewer), where the pose is
a proper scaled rotation; `LandmarkFit.image_affine` is the model -> image-pixel affine of `r3fa.labels`
(y down), and `LandmarkFit.pose_para` the 300W-LP `Pose_Para` that `r3fa.labels.image_frame_affine` maps back
to it. Depth is not observable from 2D points: tz is set so that the fitted landmarks' mean depth is 0 (the
official fits' pt3d_68 sit near 0 too).

Bad annotations (wrong count, NaN, degenerate) raise `r3fa.io.BadInputError(path, reason)` through
`check_landmarks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from r3fa.io import BadInputError
from r3fa.labels import landmark_nme
from r3fa.morphable import GRID_SIDE, MorphableModel, load_model
from r3fa.params import EXP_DIM, EXP_SLICE, SHAPE_DIM, SHAPE_SLICE, euler_from_rotation, load_whitening

N_LANDMARKS = 68
CHIN = 8
MARCHED = np.array([j for j in range(17) if j != CHIN])  # jaw landmarks that may slide to the silhouette


@dataclass(frozen=True)
class FitSettings:
    """How a fit runs.

    Attributes:
        iterations: pose / marching / coefficient rounds (the pose is solved once more at the end).
        prior_weight: weight of the Tikhonov term `sum(((a - mean) / std)^2)` against the mean squared
            landmark residual in units of the landmark box (sqrt(w h)).
        marching: re-choose the far side's jaw landmarks on the silhouette at each iteration.
    """

    iterations: int = 8
    prior_weight: float = 5e-6
    marching: bool = True


@dataclass(frozen=True)
class LandmarkFit:
    """A fitted label in the image frame.

    Attributes:
        image_affine: (3, 4) model -> image pixels (x right, y down), as `r3fa.labels.image_frame_affine`.
        shape: (40,) shape coefficients.
        exp: (10,) expression coefficients.
        pose_para: (7,) 300W-LP `Pose_Para` [pitch, yaw, roll (rad), tx, ty, tz, scale] for the image height.
        landmarks: (3, 68) the label's 68 landmarks in the image, x, y and depth (fixed model vertices, as
            every 62-d label; 300W-LP's `pt3d_68`).
        matched: (2, 68) the points the fit matched to the annotation (the marched jaw on the far side).
        nme: percent, `landmarks` against the annotation (r3fa.labels.landmark_nme), the label's NME.
        residual_nme: percent, `matched` against the annotation: what the fit minimised.
    """

    image_affine: np.ndarray
    shape: np.ndarray
    exp: np.ndarray
    pose_para: np.ndarray
    landmarks: np.ndarray
    matched: np.ndarray
    nme: float
    residual_nme: float

    @property
    def yaw_deg(self) -> float:
        return float(np.degrees(self.pose_para[1]))


@dataclass(frozen=True)
class _Contour:
    """Jaw iso-lines on the grid model: candidate vertices of each marched landmark, padded."""

    mean: np.ndarray  # (16, C, 3)
    basis: np.ndarray  # (16, C, 3, 50)
    valid: np.ndarray  # (16, C) bool
    side: np.ndarray  # (16,) +1 / -1: the landmark's side along the model x axis


@dataclass(frozen=True)
class _Model68:
    mean: np.ndarray  # (68, 3)
    basis: np.ndarray  # (68, 3, 50)
    prior_mean: np.ndarray  # (50,)
    prior_std: np.ndarray  # (50,)


@lru_cache(maxsize=1)
def _model68() -> _Model68:
    model = load_model("bfm68")
    whitening = load_whitening("v1")
    prior = np.r_[SHAPE_SLICE, EXP_SLICE]
    return _Model68(
        mean=model.mean.astype(np.float64).reshape(N_LANDMARKS, 3),
        basis=_basis(model).reshape(N_LANDMARKS, 3, SHAPE_DIM + EXP_DIM),
        prior_mean=whitening.mean[prior].astype(np.float64),
        prior_std=whitening.std[prior].astype(np.float64),
    )


def _basis(model: MorphableModel) -> np.ndarray:
    return np.concatenate([model.shape_basis, model.exp_basis], axis=1).astype(np.float64)


@lru_cache(maxsize=1)
def _contour() -> _Contour:
    """Each marched landmark's iso-line: the face vertices of the grid column (height) nearest to it, on its
    side of the face's midline (grid rows mirror left-right about row 31.5, DESIGN §2)."""
    from r3fa.profiling.mesh import load_face_mesh  # the face mask and iso-lines of face profiling

    mesh = load_face_mesh()
    grid = mesh.grid
    grid_xyz = grid.mean.astype(np.float64).reshape(-1, 3)
    landmarks = _model68().mean[MARCHED]
    nearest = np.argmin(((landmarks[:, None, :] - grid_xyz[None]) ** 2).sum(-1), axis=1)
    rows, columns = nearest // GRID_SIDE, nearest % GRID_SIDE
    ids = np.arange(GRID_SIDE)[None, :] * GRID_SIDE + columns[:, None]  # (16, 64): vertices of each column
    same_side = (np.arange(GRID_SIDE)[None, :] < GRID_SIDE / 2) == (rows[:, None] < GRID_SIDE / 2)
    valid = mesh.face_mask[ids] & same_side
    basis = _basis(grid).reshape(-1, 3, SHAPE_DIM + EXP_DIM)
    return _Contour(
        mean=grid_xyz[ids],
        basis=basis[ids],
        valid=valid,
        side=np.sign(landmarks[:, 0] - _model68().mean[:, 0].mean()),
    )


# ----------------------------------------------------------------------------- validation
def check_landmarks(points: np.ndarray, path: str) -> np.ndarray:
    """The annotation as `(2, 68)` float64, or `BadInputError(path, reason)`.

    Reasons: `expected 68 landmarks, got <shape>`, `non-finite landmarks (<k> points)`,
    `degenerate landmarks (empty box)`.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 2 and pts.shape == (N_LANDMARKS, 2):
        pts = pts.T
    if pts.shape != (2, N_LANDMARKS):
        raise BadInputError(path, f"expected 68 landmarks, got shape {pts.shape}")
    bad = ~np.isfinite(pts).all(axis=0)
    if bad.any():
        raise BadInputError(path, f"non-finite landmarks ({int(bad.sum())} points)")
    if np.ptp(pts[0]) <= 0 or np.ptp(pts[1]) <= 0:
        raise BadInputError(path, "degenerate landmarks (empty box)")
    return pts


# ----------------------------------------------------------------------------- the solves
def _solve_pose(target: np.ndarray, points3d: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scaled orthographic pose (s, R (3,3), t (2,)) with target ~ s R[:2] X + t.

    Args:
        target: (68, 2) y-up 2D points.
        points3d: (68, 3) model points.
    """
    design = np.concatenate([points3d, np.ones((len(points3d), 1))], axis=1)
    affine = np.linalg.lstsq(design, target, rcond=None)[0].T  # (2, 4)
    r1, r2 = affine[:, :3]
    rows = np.stack([r1 / np.linalg.norm(r1), r2 / np.linalg.norm(r2)])
    rows = np.concatenate([rows, np.cross(rows[0], rows[1])[None]])
    u, _, vt = np.linalg.svd(rows)
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    projected = points3d @ rotation[:2].T
    centred_p, centred_t = projected - projected.mean(0), target - target.mean(0)
    scale = float((centred_p * centred_t).sum() / (centred_p**2).sum())
    return scale, rotation, target.mean(0) - scale * projected.mean(0)


def _solve_coefficients(
    target: np.ndarray, mean: np.ndarray, basis: np.ndarray, scale: float, rotation: np.ndarray,
    translation: np.ndarray, norm: float, prior: _Model68, weight: float,
) -> np.ndarray:  # fmt: skip
    """The 50 coefficients minimising |target - P(mean + basis a)|^2 / norm^2 / 68 + weight |(a - mu)/sigma|^2."""
    projection = scale * rotation[:2]  # (2, 3)
    design = np.einsum("ij,njk->nik", projection, basis).reshape(-1, basis.shape[-1]) / norm  # (136, 50)
    rhs = ((target - mean @ projection.T - translation) / norm).reshape(-1)
    precision = 1.0 / prior.prior_std**2
    lhs = design.T @ design / N_LANDMARKS + weight * np.diag(precision)
    return np.linalg.solve(lhs, design.T @ rhs / N_LANDMARKS + weight * precision * prior.prior_mean)


def _march(
    contour: _Contour, coeffs: np.ndarray, scale: float, rotation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the marched landmarks and their silhouette vertices' mean (k, 3) and basis (k, 3, 50).

    The far side is the one whose outward model x axis points away from the viewer (negative z)."""
    far = contour.side * rotation[2, 0] < 0
    axis2d = rotation[:2, 0] / max(np.linalg.norm(rotation[:2, 0]), 1e-12)
    xyz = contour.mean[far] + contour.basis[far] @ coeffs  # (k, C, 3)
    outward = (xyz @ rotation[:2].T @ axis2d) * contour.side[far, None]
    pick = np.argmax(np.where(contour.valid[far], outward, -np.inf), axis=1)
    rows = np.arange(len(pick))
    return MARCHED[far], contour.mean[far][rows, pick], contour.basis[far][rows, pick]


def fit_landmarks(
    points: np.ndarray, image_height: int, settings: FitSettings = FitSettings(), path: str = "<landmarks>"
) -> LandmarkFit:
    """Fit pose, 40 shape and 10 expression coefficients to 68 image-frame 2D landmarks.

    Args:
        points: (2, 68) (or (68, 2)) image pixels, x right, y down, 0-based.
        image_height: H of the image (the 300W-LP `Pose_Para` is stored for y' = H + 1 - y).
        settings: iterations, prior weight, marching.
        path: the annotation's file, for the rejection reason.

    Returns:
        The fit (deterministic: fixed iterations, no randomness).

    Raises:
        BadInputError: the points are not 68 finite points spanning a box (`check_landmarks`), or they
            admit no finite fit (e.g. all on one line).
    """
    pts = check_landmarks(points, path)
    target = np.stack([pts[0], -pts[1]], axis=1)  # y-up
    norm = float(np.sqrt(np.ptp(pts[0]) * np.ptp(pts[1])))
    model = _model68()
    contour = _contour() if settings.marching else None
    coeffs = model.prior_mean * 0.0
    mean, basis = model.mean.copy(), model.basis.copy()
    for iteration in range(settings.iterations + 1):
        scale, rotation, translation = _solve_pose(target, mean + basis @ coeffs)
        if contour is not None:
            ids, vertex_mean, vertex_basis = _march(contour, coeffs, scale, rotation)
            mean, basis = model.mean.copy(), model.basis.copy()
            mean[ids], basis[ids] = vertex_mean, vertex_basis
        if iteration < settings.iterations:
            coeffs = _solve_coefficients(target, mean, basis, scale, rotation, translation, norm, model,
                                         settings.prior_weight)  # fmt: skip
    fit = _result(pts, image_height, scale, rotation, translation, coeffs, mean + basis @ coeffs, model)
    if not (np.isfinite(fit.image_affine).all() and np.isfinite(fit.landmarks).all() and scale > 0):
        raise BadInputError(path, "landmarks admit no fit (non-finite or zero-scale pose)")
    return fit


def _result(
    pts: np.ndarray, height: int, scale: float, rotation: np.ndarray, translation: np.ndarray,
    coeffs: np.ndarray, matched3d: np.ndarray, model: _Model68,
) -> LandmarkFit:  # fmt: skip
    fixed3d = model.mean + model.basis @ coeffs  # (68, 3)
    tz = -float((scale * fixed3d @ rotation[2]).mean())
    affine = np.concatenate([scale * rotation, np.array([[translation[0]], [translation[1]], [tz]])], axis=1)
    affine[1] = -affine[1]  # y down
    landmarks = (fixed3d @ affine[:, :3].T + affine[:, 3]).T
    matched = (matched3d @ affine[:2, :3].T + affine[:2, 3]).T
    pitch, yaw, roll = euler_from_rotation(rotation)
    pose_para = np.array([pitch, yaw, roll, translation[0], height + 1 + translation[1], tz, scale])
    return LandmarkFit(
        image_affine=affine,
        shape=coeffs[:SHAPE_DIM].copy(),
        exp=coeffs[SHAPE_DIM : SHAPE_DIM + EXP_DIM].copy(),
        pose_para=pose_para,
        landmarks=landmarks,
        matched=matched,
        nme=100.0 * float(landmark_nme(landmarks, pts)),
        residual_nme=100.0 * float(landmark_nme(matched, pts)),
    )


def annotation_fields(fit: LandmarkFit, points: np.ndarray) -> dict[str, np.ndarray]:
    """The fields of a 300W-LP-format `.mat` for a fit (what `r3fa.io.read_annotation` reads back).

    `Pose_Para` (1, 7), `Shape_Para` (199, 1) and `Exp_Para` (29, 1) zero-padded past the 40 / 10 fitted
    coefficients, `pt2d` (2, 68) the annotated points, `pt3d_68` (3, 68) the label's landmarks, `roi` (1, 4)
    3DDFA's roi of the points; all float64.
    """
    from r3fa.crop import roi_from_landmarks

    shape, exp = np.zeros((199, 1)), np.zeros((29, 1))
    shape[:SHAPE_DIM, 0], exp[:EXP_DIM, 0] = fit.shape, fit.exp
    return {
        "Pose_Para": fit.pose_para.reshape(1, 7).astype(np.float64),
        "Shape_Para": shape,
        "Exp_Para": exp,
        "pt2d": np.asarray(points, np.float64).reshape(2, N_LANDMARKS),
        "pt3d_68": np.asarray(fit.landmarks, np.float64),
        "roi": roi_from_landmarks(points).reshape(1, 4),
    }
