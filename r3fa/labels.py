"""62-d crop-frame labels from 300W-LP-format annotations, and how well they reproduce the landmarks.

A 300W-LP / AFLW2000-3D `.mat` gives the pose (`Pose_Para`), 199 shape and 29 expression coefficients;
the 62-d layout keeps the first 40 and 10. The annotation's model frame is y-up with the image y given by
y_image = H + 1 - y (DESIGN §2), so the image-frame affine is [sR | t] with its y row negated and offset.
`crop_frame_params` re-expresses that affine in a 120x120 crop through a roi and a named convention, so that
`crop_to_image(convention.model_to_crop(sR V + t), roi)` lands on the image-frame landmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from r3fa.crop import CROP_SIZE, CropConvention, crop_to_image
from r3fa.metrics import box_normaliser, nme
from r3fa.morphable import MorphableModel, posed_vertices
from r3fa.params import EXP_DIM, SHAPE_DIM, compose, pose_matrix, poses_from_pose_paras


def image_frame_affine(pose_para: np.ndarray, image_height: int) -> np.ndarray:
    """The `(3, 4)` affine from model coordinates to image pixels (x right, y down) of a `Pose_Para`.

    The y flip makes it a reflection (negative determinant): take pose angles from crop-frame params
    (`crop_frame_params`), never from this affine."""
    return image_frame_affines(np.asarray(pose_para, np.float64).reshape(1, 7), [image_height])[0]


def image_frame_affines(pose_paras: np.ndarray, image_heights: Sequence[int]) -> np.ndarray:
    """`image_frame_affine` of `(n, 7)` `Pose_Para`s and their images' heights, `(n, 3, 4)`, in one
    vectorised pass (the same bits as one at a time)."""
    affine = poses_from_pose_paras(pose_paras)
    affine[:, 1] = -affine[:, 1]
    affine[:, 1, 3] += np.asarray(image_heights, np.float64) + 1
    return affine


@lru_cache(maxsize=None)
def _crop_to_model(convention: CropConvention) -> np.ndarray:
    """The convention's crop_to_model as a 4x4 affine, read off its action on the unit points (once per
    convention: a label is made per record). Read-only, as it is shared."""
    probe = np.concatenate([np.zeros((3, 1)), np.eye(3)], axis=1)
    mapped = convention.crop_to_model(probe)
    to_model = np.eye(4)
    to_model[:3, 3] = mapped[:, 0]
    to_model[:3, :3] = mapped[:, 1:] - mapped[:, :1]
    to_model.flags.writeable = False
    return to_model


def crop_frame_params(
    image_affine: np.ndarray,
    shape: np.ndarray,
    expression: np.ndarray,
    roi: np.ndarray,
    convention: CropConvention,
    size: int = CROP_SIZE,
) -> np.ndarray:
    """62-d params in the crop frame of `roi` from an image-frame affine `(..., 3, 4)` and coefficients
    (`(..., 40+)`, `(..., 10+)`) and a roi `(..., 4)`; leading dimensions broadcast (one roi for all, or one each).

    Image -> crop is x' = (x - sx) * kx, y' = (y - sy) * ky, z' = z / mean(1/kx, 1/ky); then the
    convention's inverse maps crop pixels to its model frame. All of it is affine, so it composes into
    the pose rows; shape and expression are unchanged.
    """
    roi = np.asarray(roi, np.float64)
    sx, sy, ex, ey = np.moveaxis(roi, -1, 0)
    kx, ky = size / (ex - sx), size / (ey - sy)
    to_crop = np.zeros((*roi.shape[:-1], 4, 4))
    to_crop[..., 0, 0], to_crop[..., 0, 3] = kx, -sx * kx
    to_crop[..., 1, 1], to_crop[..., 1, 3] = ky, -sy * ky
    to_crop[..., 2, 2], to_crop[..., 3, 3] = 1.0 / ((1 / kx + 1 / ky) / 2), 1.0
    full = (_crop_to_model(convention) @ to_crop)[..., :3, :] @ homogeneous(image_affine)
    shape, expression = np.asarray(shape)[..., :SHAPE_DIM], np.asarray(expression)[..., :EXP_DIM]
    lead = np.broadcast_shapes(full.shape[:-2], shape.shape[:-1], expression.shape[:-1])
    return compose(np.broadcast_to(full, (*lead, 3, 4)), np.broadcast_to(shape, (*lead, SHAPE_DIM)),
                   np.broadcast_to(expression, (*lead, EXP_DIM)))  # fmt: skip


def homogeneous(affine: np.ndarray) -> np.ndarray:
    """`(..., 3, 4)` affines as `(..., 4, 4)` float64 matrices (last row 0 0 0 1)."""
    affine = np.asarray(affine, np.float64)
    out = np.zeros((*affine.shape[:-2], 4, 4))
    out[..., :3, :] = affine
    out[..., 3, 3] = 1.0
    return out


def landmarks_in_image(
    model: MorphableModel, params: np.ndarray, roi: np.ndarray, convention: CropConvention
) -> np.ndarray:
    """`(..., 3, N)` image-frame points of crop-frame `params` (the benchmark's back-projection)."""
    return crop_to_image(convention.model_to_crop(posed_vertices(model, params)), roi)


def landmarks_in_crop(model: MorphableModel, params: np.ndarray, convention: CropConvention) -> np.ndarray:
    """`(..., 3, N)` crop-frame pixel coordinates of crop-frame `params`."""
    return convention.model_to_crop(posed_vertices(model, params))


def refit_coefficients(
    model: MorphableModel, params: np.ndarray, target_xy: np.ndarray, convention: CropConvention, ridge: float = 1e-3
) -> np.ndarray:
    """Least-squares refit of the 50 shape/expression coefficients, the pose kept, so that the crop-frame
    landmarks of `params` match `target_xy` `(2, 68)` (crop pixels). A small ridge term (relative to the
    basis scale) keeps coefficients from drifting where the 2D landmarks do not constrain them."""
    params = np.asarray(params, np.float64)
    pose = pose_matrix(params)
    basis = np.concatenate([model.shape_basis, model.exp_basis], axis=1).astype(np.float64)  # (3N, 50)
    n = model.num_vertices
    basis_xyz = basis.reshape(n, 3, -1)  # vertex, coord, coefficient
    # model frame -> crop pixels is x' = x + ox, y' = c - y: the xy rows of sR @ basis, y negated
    sign = convention.model_to_crop(np.array([[1.0], [1.0], [1.0]])) - convention.model_to_crop(np.zeros((3, 1)))
    design = np.einsum("ij,njk->nik", pose[:2, :3], basis_xyz) * sign[:2, 0][None, :, None]  # (n, 2, 50)
    current = landmarks_in_crop(model, params, convention)[:2]  # (2, n)
    residual = (np.asarray(target_xy, np.float64)[:2] - current).T  # (n, 2)
    a = design.reshape(2 * n, -1)
    lam = ridge * np.trace(a.T @ a) / a.shape[1]
    delta = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ residual.reshape(-1))
    out = params.copy()
    out[12:] += delta
    return out.astype(np.float32)


def landmark_nme(pred_xy: np.ndarray, gt_xy: np.ndarray) -> np.ndarray:
    """`r3fa.metrics.nme` with the ground truth's box normaliser, for any leading shape: `(..., 2|3, N)` -> `(...)`."""
    pred = np.asarray(pred_xy, np.float64)
    gt = np.asarray(gt_xy, np.float64)
    flat_pred = pred.reshape(-1, *pred.shape[-2:])
    flat_gt = gt.reshape(-1, *gt.shape[-2:])
    return nme(flat_pred, flat_gt, box_normaliser(flat_gt)).reshape(gt.shape[:-2])
