"""The pose change of face profiling: new pose = old pose + (pitch, yaw) increment, mesh centroid fixed.

Angles follow 300W-LP's `Pose_Para` (`r3fa.params.rotation_from_euler`), read in the annotation's y-up
model frame; the image frame negates y. The yaw increment only ever increases |yaw| (towards +-90 degrees):
its magnitude is applied in the direction of the current yaw (a near-frontal face, |yaw| < 5 degrees,
turns the way the increment's sign says) and cut short at 89 degrees (at 90 the Euler angles degenerate).
"""

from __future__ import annotations

import numpy as np

from r3fa.params import PARAM_DIM, euler_from_rotation, rotation_from_euler, scale_and_rotation

MAX_YAW_DEG = 89.0  # Euler angles degenerate at exactly 90
FRONTAL_DEG = 5.0  # below this |yaw| the increment's sign picks which way the face turns
_FLIP_Y = np.diag([1.0, -1.0, 1.0])


def _scale_rotation(image_linear: np.ndarray) -> tuple[float, np.ndarray]:
    padded = np.zeros(PARAM_DIM)
    padded[:12] = np.concatenate([_FLIP_Y @ image_linear, np.zeros((3, 1))], axis=1).reshape(-1)
    scale, rotation = scale_and_rotation(padded)
    return float(scale), rotation


def applied_yaw_increment(yaw_deg: float, increment_deg: float) -> float:
    """The signed yaw change (degrees) actually applied: |yaw| grows by |increment_deg|, cut short at
    `MAX_YAW_DEG`, in the direction of the current yaw (of the increment's sign for a near-frontal face);
    0 when |yaw| cannot grow."""
    direction = np.sign(yaw_deg) if abs(yaw_deg) >= FRONTAL_DEG else (np.sign(increment_deg) or 1.0)
    magnitude = min(abs(increment_deg), MAX_YAW_DEG - abs(yaw_deg))
    return float(direction * magnitude) if magnitude > 0 else 0.0


def profile_rotation(
    image_affine: np.ndarray, yaw_increment_deg: float, pitch_increment_deg: float = 0.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """The new image-frame linear part and the rotation that takes the old one to it.

    Args:
        image_affine: `(3, 4)` [sR | t] model -> image pixels (y down).
        yaw_increment_deg: wanted |yaw| increase (sign only used for near-frontal faces).
        pitch_increment_deg: pitch change, applied as given.

    Returns:
        `(new_linear (3, 3), rotation (3, 3), applied yaw increment in degrees)`; `rotation @ old_linear
        = new_linear` in the image frame.
    """
    old = np.asarray(image_affine, np.float64)[:, :3]
    scale, rotation = _scale_rotation(old)
    pitch, yaw, roll = np.degrees(euler_from_rotation(rotation))
    delta = applied_yaw_increment(yaw, yaw_increment_deg)
    new_rotation = rotation_from_euler(*np.radians([pitch + pitch_increment_deg, yaw + delta, roll]))
    new = _FLIP_Y @ (scale * new_rotation)
    return new, new @ np.linalg.inv(old), delta


def rotate_about(points: np.ndarray, rotation: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """`(3, N)` points rotated by `rotation` about `centre` `(3,)`."""
    return rotation @ (points - centre[:, None]) + centre[:, None]
