"""Crop geometry: roi rules, the 120x120 crop, and the two reference crop-frame conventions.

Three frames:
- the *image frame*: pixel coordinates of the original image, x right, y down, in the convention of the
  annotations (`pt3d_68`), which the benchmark compares against directly;
- the *crop frame*: pixel coordinates in the 120x120 crop; image <-> crop through a roi box [sx, sy, ex, ey]:
  x_crop = (x - sx) * 120 / (ex - sx), likewise y; z scales by the mean of the two scales (DESIGN §2);
- the *model frame*: where `sR @ V + t` of crop-frame params lands. The two reference conventions map it to
  crop pixels differently, and a model must name the one it was trained with:
    V1 ("3ddfa_v1", 3DDFA's benchmark): x unchanged, y -> 121 - y, z unchanged;
    V2 ("3ddfa_v2", 3DDFA-V2):          x -> x - 1, y -> 120 - y, z -> z - 1.
All point arrays are `(..., 2 or 3, N)`.
"""

from __future__ import annotations

from enum import Enum

import cv2
import numpy as np

CROP_SIZE = 120


class CropConvention(str, Enum):
    V1 = "3ddfa_v1"
    V2 = "3ddfa_v2"

    def _offsets(self) -> tuple[float, float, float]:
        """(x offset, y reflection constant, z offset): crop = (x + ox, cy - y, z + oz)."""
        return (0.0, CROP_SIZE + 1.0, 0.0) if self is CropConvention.V1 else (-1.0, float(CROP_SIZE), -1.0)

    def model_to_crop(self, pts):
        """Model-frame points `(..., 3, N)` -> crop-frame pixels (numpy or torch)."""
        ox, cy, oz = self._offsets()
        rows = [pts[..., 0:1, :] + ox, cy - pts[..., 1:2, :]]
        if pts.shape[-2] == 3:
            rows.append(pts[..., 2:3, :] + oz)
        return _cat(rows, pts)

    def crop_to_model(self, pts):
        """Inverse of `model_to_crop`."""
        ox, cy, oz = self._offsets()
        rows = [pts[..., 0:1, :] - ox, cy - pts[..., 1:2, :]]
        if pts.shape[-2] == 3:
            rows.append(pts[..., 2:3, :] - oz)
        return _cat(rows, pts)


def _cat(rows, like):
    if isinstance(like, np.ndarray):
        return np.concatenate(rows, axis=-2)
    import torch

    return torch.cat(rows, dim=-2)


def _scales(roi: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    roi = np.asarray(roi, np.float64)
    return (roi[..., 2] - roi[..., 0]) / size, (roi[..., 3] - roi[..., 1]) / size


def crop_to_image(pts: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Crop-frame points `(..., 2|3, N)` back to the image through roi `(..., 4)` (3DDFA's rule)."""
    pts = np.array(pts, dtype=np.float64)
    roi = np.asarray(roi, np.float64)
    sx_, sy_ = _scales(roi, size)
    pts[..., 0, :] = pts[..., 0, :] * sx_[..., None] + roi[..., 0:1]
    pts[..., 1, :] = pts[..., 1, :] * sy_[..., None] + roi[..., 1:2]
    if pts.shape[-2] == 3:
        pts[..., 2, :] *= ((sx_ + sy_) / 2)[..., None]
    return pts


def image_to_crop(pts: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Image-frame points to the crop frame (inverse of `crop_to_image`)."""
    pts = np.array(pts, dtype=np.float64)
    roi = np.asarray(roi, np.float64)
    sx_, sy_ = _scales(roi, size)
    pts[..., 0, :] = (pts[..., 0, :] - roi[..., 0:1]) / sx_[..., None]
    pts[..., 1, :] = (pts[..., 1, :] - roi[..., 1:2]) / sy_[..., None]
    if pts.shape[-2] == 3:
        pts[..., 2, :] /= ((sx_ + sy_) / 2)[..., None]
    return pts


def roi_from_landmarks(pts: np.ndarray) -> np.ndarray:
    """3DDFA's roi from landmarks `(..., 2|3, N)`: square of side max(w, h) of their box, its diagonal as the
    crop side, centred on the box centre. Returns [sx, sy, ex, ey] `(..., 4)` (float64, not clipped)."""
    pts = np.asarray(pts)
    x, y = np.asarray(pts[..., 0, :], np.float64), np.asarray(pts[..., 1, :], np.float64)
    left, right, top, bottom = x.min(-1), x.max(-1), y.min(-1), y.max(-1)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    side = np.maximum(right - left, bottom - top) * np.sqrt(2.0)
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=-1)


def roi_from_box(box: np.ndarray) -> np.ndarray:
    """3DDFA's roi from a face-detector box [x0, y0, x1, y1]: side int(1.58 (w+h)/2), centre moved down
    by 0.14 (w+h)/2."""
    x0, y0, x1, y1 = np.asarray(box, np.float64)[:4]
    old = (x1 - x0 + y1 - y0) / 2
    cx, cy = x1 - (x1 - x0) / 2, y1 - (y1 - y0) / 2 + old * 0.14
    side = int(old * 1.58)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_image(image: np.ndarray, roi: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Resample `image` inside roi to `size x size` (area outside the image is black).

    The pixel mapping is exactly `image_to_crop`, so landmarks transformed by it stay on the pixels.
    Bilinear, as the official 3DDFA crops were made (warpAffine has no area averaging).
    """
    sx, sy, ex, ey = np.asarray(roi, np.float64)
    ax, ay = size / (ex - sx), size / (ey - sy)
    affine = np.array([[ax, 0, -sx * ax], [0, ay, -sy * ay]])
    return cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
