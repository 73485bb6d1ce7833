"""The 62-d parameter vector of the 3DDFA family, its whitening, and Euler angles.

Layout (DESIGN §2): `p[:12].reshape(3, 4)` is the row-major affine [sR | t] (scale x rotation, then
translation tx, ty, tz), `p[12:52]` the 40 shape and `p[52:62]` the 10 expression coefficients.
300W-LP stores the pose as `Pose_Para = [pitch, yaw, roll (radians), tx, ty, tz, scale]`, with the rotation
R = Rx(pitch) Ry(yaw) Rz(roll) in the transposed-sign form of 3DDFA/face3d (`rotation_from_euler`).
Functions on parameter vectors take batched arrays (`(..., 62)`) and, where they say so, torch tensors;
`rotation_from_euler` takes single angles or arrays of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from r3fa.paths import data_root
from r3fa.safe_pickle import load_numeric_pickle

PARAM_DIM = 62
POSE_DIM = 12
SHAPE_DIM = 40
EXP_DIM = 10
SHAPE_SLICE = slice(POSE_DIM, POSE_DIM + SHAPE_DIM)
EXP_SLICE = slice(POSE_DIM + SHAPE_DIM, PARAM_DIM)


def pose_matrix(params):
    """[sR | t] as `(..., 3, 4)` from `(..., 62)` params (numpy or torch)."""
    return params[..., :POSE_DIM].reshape(*params.shape[:-1], 3, 4)


def shape_coeffs(params):
    return params[..., SHAPE_SLICE]


def exp_coeffs(params):
    return params[..., EXP_SLICE]


def compose(pose: np.ndarray, shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
    """Pack a `(..., 3, 4)` pose, 40 shape and 10 expression coefficients into `(..., 62)` float32."""
    pose = np.asarray(pose, dtype=np.float64)
    flat = pose.reshape(*pose.shape[:-2], POSE_DIM)
    return np.concatenate([flat, shape, expression], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------- Euler angles
def rotation_from_euler(pitch, yaw, roll) -> np.ndarray:
    """Rotation matrix of 300W-LP's `Pose_Para` angles (radians), as face3d's `angle2matrix_3ddfa`: `(3, 3)`
    for single angles, `(..., 3, 3)` for arrays of angles (the same bits per rotation either way).

    R = Rx Ry Rz with Rx = [[1,0,0],[0,c,s],[0,-s,c]] etc. (each the transpose of the textbook form),
    so R.T = Rz(roll) Ry(yaw) Rx(pitch) in the textbook convention.
    """
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    cz, sz = np.cos(roll), np.sin(roll)
    zero, one = np.zeros_like(cx), np.ones_like(cx)

    def matrix(*rows: np.ndarray) -> np.ndarray:
        return np.stack(rows, axis=-1).reshape(*np.shape(cx), 3, 3)

    rx = matrix(one, zero, zero, zero, cx, sx, zero, -sx, cx)
    ry = matrix(cy, zero, -sy, zero, one, zero, sy, zero, cy)
    rz = matrix(cz, sz, zero, -sz, cz, zero, zero, zero, one)
    return rx @ ry @ rz


def euler_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Inverse of `rotation_from_euler`: `(..., 3, 3)` -> `(..., 3)` [pitch, yaw, roll] in radians."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = -np.arcsin(np.clip(r[..., 0, 2], -1.0, 1.0))
    pitch = np.arctan2(r[..., 1, 2], r[..., 2, 2])
    roll = np.arctan2(r[..., 0, 1], r[..., 0, 0])
    return np.stack([pitch, yaw, roll], axis=-1)


def _det3(m: np.ndarray) -> np.ndarray:
    """Determinants of `(..., 3, 3)` matrices by cofactor expansion (a fraction of `np.linalg.det`'s
    per-call cost on one matrix; only the sign of an orthogonal matrix's is used)."""
    return (
        m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
        - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
        + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
    )


def scale_and_rotation(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the 3x3 part of the pose into its scale `(...,)` and nearest rotation `(..., 3, 3)`.

    The crop-frame affine need not be exactly a scaled rotation (non-square roi); the nearest rotation
    is taken by SVD and the scale is the mean singular value.
    """
    sr = pose_matrix(np.asarray(params, dtype=np.float64))[..., :3]
    u, s, vt = np.linalg.svd(sr)
    det = np.sign(_det3(u @ vt))
    u[..., :, 2] *= det[..., None]
    return s.mean(axis=-1), u @ vt


def pose_degrees(params: np.ndarray) -> np.ndarray:
    """[pitch, yaw, roll] in degrees (300W-LP convention) from any `(..., 62)` parameter vector."""
    _, rotation = scale_and_rotation(params)
    return np.degrees(euler_from_rotation(rotation))


def pose_from_pose_para(pose_para: np.ndarray) -> np.ndarray:
    """The `(3, 4)` [sR | t] of a 300W-LP `Pose_Para` (7 values), in the annotation's y-up model frame."""
    return poses_from_pose_paras(np.asarray(pose_para, dtype=np.float64).reshape(1, 7))[0]


def poses_from_pose_paras(pose_paras: np.ndarray) -> np.ndarray:
    """`pose_from_pose_para` of `(n, 7)` `Pose_Para`s, `(n, 3, 4)`, in one vectorised pass (the same bits)."""
    pitch, yaw, roll, tx, ty, tz, scale = np.asarray(pose_paras, dtype=np.float64).T
    sr = scale[:, None, None] * rotation_from_euler(pitch, yaw, roll)
    return np.concatenate([sr, np.stack([tx, ty, tz], axis=-1)[..., None]], axis=2)


# ----------------------------------------------------------------------------- whitening
WhiteningName = Literal["v1", "v2"]


@dataclass(frozen=True)
class Whitening:
    """Per-dimension statistics that map parameters to network units: `(p - mean) / std`."""

    name: str
    mean: np.ndarray
    std: np.ndarray

    def whiten(self, params):
        return (params - self._like(self.mean, params)) / self._like(self.std, params)

    def unwhiten(self, normalised):
        return normalised * self._like(self.std, normalised) + self._like(self.mean, normalised)

    @staticmethod
    def _like(stats: np.ndarray, ref):
        if isinstance(ref, np.ndarray):
            return stats.astype(ref.dtype, copy=False)
        import torch  # only when called with tensors

        return torch.as_tensor(stats, dtype=ref.dtype, device=ref.device)

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Whitening":
        return cls(str(d["name"]), np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))

    @classmethod
    def fit(cls, params: np.ndarray, name: str) -> "Whitening":
        """Statistics of a set of `(n, 62)` labels; constant dimensions get std 1."""
        params = np.asarray(params, np.float64)
        std = params.std(axis=0)
        std[std < 1e-8] = 1.0
        return cls(name, params.mean(axis=0).astype(np.float32), std.astype(np.float32))


def load_whitening(name: WhiteningName) -> Whitening:
    """The published statistics: "v1" (3DDFA, param_whitening.pkl) or "v2" (3DDFA-V2, 120x120 pkl)."""
    root = data_root()
    if name == "v1":
        d = load_numeric_pickle(root / "3ddfa/train.configs/param_whitening.pkl")
        mean, std = d["param_mean"], d["param_std"]
    elif name == "v2":
        d = load_numeric_pickle(root / "3ddfa_v2/configs/param_mean_std_62d_120x120.pkl")
        mean, std = d["mean"], d["std"]
    else:
        raise ValueError(f"unknown whitening {name!r}: expected 'v1' or 'v2'")
    return Whitening(name, np.asarray(mean, np.float32).reshape(62), np.asarray(std, np.float32).reshape(62))
